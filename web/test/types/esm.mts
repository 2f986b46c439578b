// An ES module that imports the package, as a bundled page does: it must
// type-check under tsc --strict.
import Switchboard, { connect, Client } from 'switchboard-browser';
import type { Message, State, Options } from 'switchboard-browser';

const opts: Options = { minDelay: 100, maxDelay: 5000, factor: 1.5 };
const sb: Client = connect(['wss://rt.example.com/ws', 'https://rt2.example.com/ws'], opts);
const again: Switchboard.Client = Switchboard.connect('wss://a/ws,wss://b/ws');
const byClass = new Client(null);

const off = sb.on<{ text: string }>('ShowMessage', (data, msg: Message<{ text: string }>) => {
  const text: string = data.text;
  const offset: number = msg.offset;
  const id: string = msg.id;
  const where: string = msg.channel + msg.event;
  console.log(text, offset, id, where, msg.type === 'message');
});
sb.on('*', (data, msg) => console.log(data, msg.offset + 1));
sb.onCount((n: number) => console.log(n + 1));
sb.onState((s: State) => {
  if (s === 'reconnecting') console.log('dim the count');
});
sb.onReconnect((recovered: boolean) => recovered || console.log('reload'));
sb.subscribe('quotes', { last: 1 });
sb.subscribe('news');
sb.unsubscribe('news');
off();
const n: number | null = sb.count;
const state: State = sb.state;
console.log(n, state);
again.close();
byClass.close();
sb.close();
