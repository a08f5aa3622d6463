// The Web Worker side of bench/channel_probe.ts: echoes each message, by postMessage ("pm") or
// through the SharedArrayBuffer it is given ("sab": ctl[0] counts requests, ctl[1] replies).
const scope = self as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: unknown): void;
};
scope.onmessage = (e: MessageEvent) => {
  const m = e.data;
  if (m.mode === "pm") {
    scope.onmessage = (ev: MessageEvent) => scope.postMessage(ev.data);
    scope.postMessage("ready");
    return;
  }
  const ctl = new Int32Array(m.sab);
  const data = new Uint8Array(m.sab, 64);
  let seen = 0;
  scope.postMessage("ready");
  const loop = async () => {
    for (;;) {
      const r = Atomics.waitAsync(ctl, 0, seen);
      if (r.async) await r.value;
      const now = Atomics.load(ctl, 0);
      if (now < 0) return;
      // "Handle" it: read the payload, as decoding a batch would.
      let s = 0;
      for (let i = 0; i < 64; i++) s += data[i];
      data[64] = s & 0xff;
      seen = now;
      Atomics.store(ctl, 1, now);
      Atomics.notify(ctl, 1);
    }
  };
  void loop();
};
