// Compiled by package.test.js with tsc --strict: what a TypeScript web
// server writes must type-check, and misuse must not.
import { connect, mintToken, status, SwitchboardError, Client, EmitResult, Watch } from '..';

async function main(): Promise<void> {
  const sb: Client = connect('switchboard:9090', { token: process.env.SWITCHBOARD_API_TOKEN, deadlineMs: 2000 });
  const tls = connect('rt.example.com:9090', { tls: { ca: Buffer.from('pem'), cert: 'pem', key: 'pem', servername: 'rt' } });
  const res: EmitResult = await sb.emit('ShowMessage', { text: 'hi' }, { channel: 'quotes', key: 'k', signal: AbortSignal.timeout(100) });
  const id: string = res.id;
  const offset: number = res.offset;
  const n: number = res.recipients + offset + (await sb.count('quotes'));
  const w: Watch = sb.watch('', (count: number) => console.log(count, id, n), {
    onError: (err: SwitchboardError, info) => console.log(err.code === status.UNAVAILABLE, err.codeName, info.retryInMs),
  });
  w.close();
  await w.done;
  tls.close();

  // @ts-expect-error: the event is a string
  await sb.emit(42, {});
  // @ts-expect-error: the channel goes in the options
  await sb.emit('ShowMessage', {}, 'quotes');
  // @ts-expect-error: recipients is a number
  const s: string = res.recipients;
  // @ts-expect-error: offset is a number
  const o: string = res.offset;
  // @ts-expect-error: watch takes a callback
  sb.watch('');
  const token: string = mintToken('secret', 'user-1', 300) + mintToken(Buffer.from('secret'), 'user-2');
  // @ts-expect-error: the ttl is in seconds, a number
  mintToken('secret', 'user-1', '5m');
  void token;
  // @ts-expect-error: tls is true or options
  connect('x:1', { tls: 'yes' });
  void s;
  void o;
}
void main;
