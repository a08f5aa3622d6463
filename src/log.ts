/**
 * Structured logging for the roles, on npm:@logtape/logtape. Logs go to standard error,
 * one line per record, written synchronously so nothing is lost when a process exits.
 * `ZMANAGER_LOG` sets the level (`debug`, `info`, `warning`, `error`; default `info`).
 *
 * @module
 */

import {
  configureSync,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";

let configured = false;

/** Configures logging once per process (later calls do nothing). */
export function setupLogging(level?: LogLevel): void {
  if (configured) return;
  configured = true;
  const wanted = (level ?? Deno.env.get("ZMANAGER_LOG") ?? "info") as LogLevel;
  const format = getTextFormatter({ timestamp: "date-time-tz" });
  const encoder = new TextEncoder();
  const stderr = (record: LogRecord) => {
    try {
      Deno.stderr.writeSync(encoder.encode(format(record)));
    } catch { /* stderr closed: nothing to do */ }
  };
  configureSync({
    reset: true,
    sinks: { stderr },
    loggers: [
      { category: ["zmanager"], lowestLevel: wanted, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** A logger for a part of the system, e.g. `logger("subject")`. */
export function logger(...category: string[]): Logger {
  return getLogger(["zmanager", ...category]);
}
