// Calls client.d.ts must refuse: tsc --strict fails on each line marked
// with the error it must give, and on no other.
import { connect } from 'switchboard-browser';

const sb = connect(['wss://rt.example.com/ws'], { minDelay: '250' }); // TS2322
connect(8080); // TS2345
sb.subscribe('quotes', 1); // TS2559
sb.on('ShowMessage'); // TS2554
sb.on('ShowMessage', (data, msg) => msg.offset.toUpperCase()); // TS2339
sb.onState((s) => s === 'opened'); // TS2367
sb.onReconnect((recovered: string) => recovered); // TS2345
sb.state = 'open'; // TS2540
const n: number = sb.count; // TS2322
sb.send({ type: 'subscribe', channel: 'quotes' }); // TS2339
connect('/ws', { token: 42 }); // TS2322
sb.onCount((n, v: string) => v); // TS2345
void n;
