/**
 * The dashboard at `/`: one HTML page (`dashboard.html`, no build step) and the chart library
 * it draws with, Chart.js (npm:chart.js), served from the package Deno fetched.
 *
 * @module
 */

let page: Promise<string> | undefined;
let chart: Promise<string> | undefined;

/** The dashboard's HTML. */
export function dashboardPage(): Promise<string> {
  page ??= fetch(new URL("./dashboard.html", import.meta.url)).then((r) => r.text());
  return page;
}

/**
 * Chart.js's UMD build (`dist/chart.umd.min.js`, which its package's exports do not name), read
 * beside the module its package exports.
 */
export function chartLibrary(): Promise<string> {
  chart ??= (async () => {
    const url = () => new URL("./chart.umd.min.js", import.meta.resolve("chart.js"));
    try {
      return await (await fetch(url())).text();
    } catch {
      await import("chart.js"); // fetches the package into Deno's cache
      return await (await fetch(url())).text();
    }
  })();
  chart.catch(() => chart = undefined);
  return chart;
}
