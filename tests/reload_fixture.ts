// The reload tests' component (tests/testdata/reload), copied to a temporary directory so that a
// test can rewrite its files, and a deployment of it.
import { runCli } from "./helpers.ts";
import { type Deployment, spawnDeployment, type SpawnOptions } from "../testing/deployment.ts";

const SOURCE = new URL("./testdata/reload/", import.meta.url);

/** A copy of the component: its files' paths, and ways to change them. */
export interface Component {
  readonly dir: string;
  readonly flows: string;
  readonly mapping: string;
  readonly stamp: string;
  /** Rewrites stamp.ts with `STAMP = version`. */
  setStamp(version: string): Promise<void>;
  /** Writes a file of the component (relative name); returns its path. */
  write(name: string, text: string): Promise<string>;
}

/** Copies the component into a new temporary directory. */
export async function copyComponent(): Promise<Component> {
  const dir = await Deno.makeTempDir({ prefix: "zmr" });
  for (const name of ["flows.ini", "mapping.ini", "stamp.ts"]) {
    await Deno.copyFile(new URL(name, SOURCE), `${dir}/${name}`);
  }
  const stamp = `${dir}/stamp.ts`;
  const original = await Deno.readTextFile(stamp);
  return {
    dir,
    flows: `${dir}/flows.ini`,
    mapping: `${dir}/mapping.ini`,
    stamp,
    setStamp: (version) => Deno.writeTextFile(stamp, original.replace('"v1"', JSON.stringify(version))),
    write: async (name, text) => {
      await Deno.writeTextFile(`${dir}/${name}`, text);
      return `${dir}/${name}`;
    },
  };
}

/** A deployment of `c` (2 workers unless told). */
export function deploy(c: Component, options: SpawnOptions = {}): Promise<Deployment> {
  return spawnDeployment({
    workers: 2,
    ...options,
    files: [c.flows, c.mapping],
    showLogs: Boolean(Deno.env.get("ZMANAGER_TEST_LOGS")),
  });
}

/** `cli.ts reload` against `d` (with `files`, or none: the current version's). */
export function reloadCli(
  d: Deployment,
  files: readonly string[] = [],
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCli(["reload", ...d.flags, ...files]);
}

/** The Subject's reload key. */
export function reloadKey(d: Deployment): Promise<string> {
  return Deno.readTextFile(`${d.dir}/reload.key`);
}

/** Polls `check` every 100 ms until it returns true, up to `ms`; returns whether it did. */
export async function eventually(check: () => Promise<boolean> | boolean, ms = 10_000): Promise<boolean> {
  for (let waited = 0; waited <= ms; waited += 100) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}
