// A plain script, as a page with <script src=".../client.js"> has it: the
// global Switchboard, declared by client.d.ts, must type-check.
/// <reference path="../../client.d.ts" />

const page = Switchboard.connect('/ws');
page.onState((s) => { document.title = s; });
page.onCount((n) => { document.title = String(n); });
page.onCount((n, v) => { document.title = `${v} visitors, ${n} tabs`; });
Switchboard.connect('/ws', { token: 'eyJ.x.y' });
Switchboard.connect('/ws', { token: () => fetch('/token').then((r) => r.text()) });
page.subscribe('quotes', { last: 3 });
