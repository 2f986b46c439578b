// A plain script, as a page with <script src=".../client.js"> has it: the
// global Switchboard, declared by client.d.ts, must type-check.
/// <reference path="../../client.d.ts" />

const page = Switchboard.connect('/ws');
page.onState((s) => { document.title = s; });
page.onCount((n) => { document.title = String(n); });
page.subscribe('quotes', { last: 3 });
