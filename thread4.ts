self.onmessage = () => {
  const out = [];
  try {
    Deno.kill(16366, "SIGTERM");
    out.push("kill other ok");
  } catch (e) {
    out.push("kill other: " + e.message.split("\n")[0]);
  }
  self.postMessage(out);
};
