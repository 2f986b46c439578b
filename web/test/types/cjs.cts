// A CommonJS module that requires the package: it must type-check.
import Switchboard = require('switchboard-browser');

const sb = Switchboard.connect(undefined, { minDelay: 50 });
const stop: () => void = sb.onCount((n) => console.log(n.toFixed(0)));
sb.on('Quote', (data: { text: string; author?: string }) => console.log(data.text));
stop();
sb.close();
