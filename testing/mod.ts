/**
 * Tools for testing deployments and services built on ZManager for Deno, as Deno std keeps its
 * test helpers in a module of their own: run a whole deployment as a child process
 * ({@linkcode spawnDeployment}), find and kill its role processes, read their counters, and put
 * a fault proxy ({@linkcode FaultProxy}) on a hop. Not needed to run a deployment.
 *
 * @example
 * ```ts ignore
 * import { killRole, spawnDeployment } from "./mod.ts";
 * await using d = await spawnDeployment({ workers: 2 });
 * await using client = await d.connect();
 * await killRole(d.dir, "worker");
 * console.log((await client.request("Hello", { name: "Ada" })).action); // "done"
 * ```
 *
 * @module
 */

export {
  type Deployment,
  freePort,
  killRole,
  rolePids,
  roleStats,
  spawnDeployment,
  type SpawnOptions,
} from "./deployment.ts";
export { type FaultPolicy, FaultProxy, type FaultProxyOptions, parseFaultPolicy } from "./fault.ts";
