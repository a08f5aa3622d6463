/**
 * What a component's handlers may touch (this project's addition to mapping files): an optional
 * `[permissions]` section with `read`, `write`, `net`, `env` and `run` lists, e.g.
 * `read = ./data, /etc/ssl/certs` or `net = 127.0.0.1:5432`; `*` alone means all. A component is
 * the mapping file and its folder. Without the section a component may read its own folder and
 * nothing else. A worker runs each distinct permission set's handlers in a sandbox thread that
 * Deno binds to exactly these permissions (`src/roles/sandbox.ts`).
 *
 * @module
 */

/** The kinds of permission a component may ask for. */
export const PERMISSION_KINDS = ["read", "write", "net", "env", "run"] as const;

/** One kind of permission. */
export type PermissionKind = typeof PERMISSION_KINDS[number];

/** A permission as granted: `true` for all, or the allowed resources (none when empty). */
export type Grant = true | readonly string[];

/** What a component's handlers may touch: one grant per kind. */
export type ComponentPermissions = Readonly<Record<PermissionKind, Grant>>;

/** What a `[permissions]` section declares, and where. */
export interface DeclaredPermissions {
  /** The mapping file. */
  readonly file: string;
  /** The grants written, by kind (a kind not written is not granted, `read` defaults to the folder). */
  readonly grants: Readonly<Partial<Record<PermissionKind, Grant>>>;
  /** The 1-based line of each kind's entry. */
  readonly lines: Readonly<Partial<Record<PermissionKind, number>>>;
}

/**
 * Parses one `[permissions]` value: a comma-separated list, or `*` for all. Returns a reason
 * string when it is not one.
 *
 * @example
 * ```ts
 * import { parseGrant } from "./permissions.ts";
 * parseGrant("net", "127.0.0.1:5432, localhost:80"); // ["127.0.0.1:5432", "localhost:80"]
 * parseGrant("run", "*"); // true
 * ```
 */
export function parseGrant(kind: PermissionKind, value: string): Grant | string {
  const items = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (items.includes("*")) {
    return items.length === 1 ? true : `${kind} = * grants all: write it alone, without other entries`;
  }
  return items;
}

/** The folder of a file path (`.` for a bare name). */
export function folderOf(file: string): string {
  const i = file.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : file.slice(0, i);
}

/** `path` relative to `folder` unless it is absolute, without `.` and `..` segments where it can. */
function joinPath(folder: string, path: string): string {
  const full = path.startsWith("/") ? path : `${folder}/${path}`;
  const out: string[] = [];
  for (const seg of full.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === ".." && out.length && out[out.length - 1] !== "..") out.pop();
    else out.push(seg);
  }
  const joined = out.join("/");
  return full.startsWith("/") ? `/${joined}` : joined === "" ? "." : joined;
}

/**
 * A component's permissions: its declaration, with `read` and `write` paths taken relative to
 * the component's folder; `read` defaults to that folder (and always includes it: its handler
 * modules live there). Kinds not declared are denied.
 *
 * @example
 * ```ts
 * import { componentPermissions } from "./permissions.ts";
 * componentPermissions("/srv/c/mapping.ini").read; // ["/srv/c"]
 * componentPermissions("/srv/c/mapping.ini", {
 *   file: "/srv/c/mapping.ini",
 *   grants: { read: ["data"], net: ["127.0.0.1:80"] },
 *   lines: {},
 * }).read; // ["/srv/c", "/srv/c/data"]
 * ```
 */
export function componentPermissions(
  mappingFile: string,
  declared?: DeclaredPermissions,
): ComponentPermissions {
  const folder = folderOf(mappingFile);
  const g = declared?.grants ?? {};
  const paths = (grant: Grant | undefined, base: string[]): Grant =>
    grant === true ? true : [...new Set([...base, ...(grant ?? []).map((p) => joinPath(folder, p))])];
  return {
    read: paths(g.read, [folder]),
    write: paths(g.write, []),
    net: g.net ?? [],
    env: g.env ?? [],
    run: g.run ?? [],
  };
}

/** The same text for equal permission sets: one sandbox serves each distinct set. */
export function permissionsKey(p: ComponentPermissions): string {
  return JSON.stringify(PERMISSION_KINDS.map((k) => p[k] === true ? true : [...p[k] as string[]].sort()));
}

/**
 * The permissions as one line, e.g. `read /srv/c; net 127.0.0.1:80` (`none` when nothing but
 * what is listed).
 *
 * @example
 * ```ts
 * import { componentPermissions, formatPermissions } from "./permissions.ts";
 * formatPermissions(componentPermissions("/srv/c/mapping.ini")); // "read /srv/c"
 * ```
 */
export function formatPermissions(p: ComponentPermissions): string {
  const parts = PERMISSION_KINDS.flatMap((k) => {
    const g = p[k];
    if (g === true) return [`${k} *`];
    return g.length ? [`${k} ${g.join(", ")}`] : [];
  });
  return parts.length ? parts.join("; ") : "none";
}

/**
 * What `--strict` refuses unless the operator allows it (`--allow-component-permissions`):
 * running programs at all, and unrestricted network access. One reason per kind.
 */
export function riskyGrants(d: DeclaredPermissions): { kind: PermissionKind; reason: string }[] {
  const out: { kind: PermissionKind; reason: string }[] = [];
  const run = d.grants.run;
  if (run === true || (run && run.length)) {
    out.push({ kind: "run", reason: `asks to run programs (run = ${run === true ? "*" : run.join(", ")})` });
  }
  if (d.grants.net === true) {
    out.push({ kind: "net", reason: "asks for unrestricted network access (net = *)" });
  }
  return out;
}

/**
 * Deno's message for a denied operation (`Requires read access to "/etc/passwd", run again with
 * the --allow-read flag`) as a handler's error says it: `read access to "/etc/passwd" denied`;
 * `undefined` for any other message.
 *
 * @example
 * ```ts
 * import { deniedMessage } from "./permissions.ts";
 * deniedMessage('Requires net access to "127.0.0.1:9", run again with the --allow-net flag');
 * // 'net access to "127.0.0.1:9" denied'
 * ```
 */
export function deniedMessage(message: string): string | undefined {
  const m = /^Requires (\w+) access(?: to (.+?))?, run again with the --allow-\w+ flag/.exec(message);
  if (!m) return undefined;
  return `${m[1]} access${m[2] ? ` to ${m[2]}` : ""} denied`;
}

/**
 * What to do about a permission a component's handler module was denied while it was imported
 * (Deno's message, as in {@linkcode deniedMessage}, anywhere in `message`): the denial and the
 * `[permissions]` line that grants it, in the mapping files named; `undefined` for any other
 * message. Deno's own advice (`run again with the --allow-env flag`) is no help there: the
 * sandbox has exactly the permissions its mapping file grants.
 *
 * @example
 * ```ts
 * import { grantAdvice } from "./permissions.ts";
 * grantAdvice('Uncaught NotCapable: Requires env access to "HOME", run again with the --allow-env flag', ["a.ini"]);
 * // 'env access to "HOME" denied: grant it in the [permissions] section of a.ini (env = HOME)'
 * ```
 */
export function grantAdvice(message: string, files: readonly string[]): string | undefined {
  const m = /Requires (\w+) access(?: to "?(.+?)"?)?, run again with the --allow-\w+ flag/.exec(message);
  if (!m) return undefined;
  const [, kind, resource] = m;
  const denied = `${kind} access${resource ? ` to "${resource}"` : ""} denied`;
  if (!(PERMISSION_KINDS as readonly string[]).includes(kind)) {
    return `${denied}: handlers cannot be granted ${kind} access (a [permissions] section grants ${
      PERMISSION_KINDS.join(", ")
    })`;
  }
  return `${denied}: grant it in the [permissions] section of ${files.join(" or ")} (${kind} = ${
    resource ?? "*"
  })`;
}
