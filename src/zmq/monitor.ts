/**
 * Socket monitors shared by their users. libzmq allows one monitor per socket (a second
 * `zmq_socket_monitor` replaces the first), while several parts of a role watch the same socket:
 * the CURVE gatekeeper counts failed handshakes, the Integration Manager follows its
 * subscribers' connections. The first watcher of a socket starts one monitor for every event;
 * each watcher gets the events it asked for.
 *
 * @module
 */

import { MonitorEvent } from "./ffi.ts";
import type { Reactor, ReactorSocket } from "./reactor.ts";

/** Called with a monitor event, the endpoint it names, and its value (a descriptor for connection events). */
export type MonitorListener = (event: number, endpoint: string, value: number) => void;

/** Every event (`ZMQ_EVENT_ALL`). */
const ALL_EVENTS = 0xffff;
const text = new TextDecoder();
const watchers = new WeakMap<ReactorSocket, { events: number; onEvent: MonitorListener }[]>();
let count = 0;

/**
 * Calls `onEvent` with each of `events` (a mask of {@linkcode MonitorEvent} values) that happens
 * on `socket`, from the reactor's turn. Events before the first watcher's monitor is connected
 * are not seen: watch before binding or connecting.
 */
export async function monitorSocket(
  reactor: Reactor,
  socket: ReactorSocket,
  events: number,
  onEvent: MonitorListener,
): Promise<void> {
  let list = watchers.get(socket);
  if (list) return void list.push({ events, onEvent });
  list = [{ events, onEvent }];
  watchers.set(socket, list);
  const endpoint = `inproc://zmanager-monitor-${Deno.pid}-${++count}`;
  await reactor.exec(() => socket.raw.monitor(endpoint, ALL_EVENTS));
  const monitor = reactor.socket("PAIR", { linger: 0 });
  await monitor.connect(endpoint);
  monitor.onMessage((frames) => {
    const head = frames[0];
    if (frames.length !== 2 || head.length < 6) return;
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const event = view.getUint16(0, true);
    const value = view.getUint32(2, true);
    if (event === MonitorEvent.MONITOR_STOPPED) return void monitor.close().catch(() => {});
    const at = text.decode(frames[1]);
    for (const w of list) if (event & w.events) w.onEvent(event, at, value);
  });
}
