/*! Switchboard browser client as an ES module: client.js's code, exported. Served at /client.mjs.
 *
 *   import { connect } from "https://rt.example.com/client.mjs";
 *   const sb = connect(["wss://rt.example.com/ws"]);
 *
 * In a browser client.js runs as a module and leaves Switchboard on the
 * global object; in Node.js and bundlers it is a CommonJS module, whose
 * exports are the default import.
 */
import * as cjs from "./client.js";

const Switchboard = cjs.default || globalThis.Switchboard;

export default Switchboard;
export const connect = Switchboard.connect;
export const Client = Switchboard.Client;
