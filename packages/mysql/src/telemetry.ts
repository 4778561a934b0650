// What one invocation's connection did, reported once when it ends: to `onStats`, and as one structured log line
// with `logStats`. Nothing here ever holds a secret: only counts, times and outcomes.
import type { Request } from "@middy/core";
import { reportStats, type StatsSink } from "@middy-conn/lifecycle/internal";
import { pkg } from "./options.ts";

export interface MysqlConnectionStats {
	mode: "scoped" | "pool";
	/** A new server connection was opened for this invocation (scoped: always when used; pool: a cold one). */
	connected: boolean;
	/** Time to open (scoped) or acquire (pool) the connection, in ms; 0 when nothing was opened. */
	connectMs: number;
	/** Connects refused by a full server and tried again (see the connectRetry option). */
	connectRetries: number;
	/** Pool mode: a connection was taken from the warm pool (new or reused). Always false in scoped mode. */
	acquired: boolean;
	/** Statements run through `query` and `execute`. */
	queries: number;
	/** What happened to the last transaction of the invocation. */
	transaction: "committed" | "rolled-back" | "none";
	/** How the connection left the invocation. */
	closed: "ended" | "released" | "destroyed" | "none";
}

export const newStats = (mode: "scoped" | "pool"): MysqlConnectionStats => ({
	mode,
	connected: false,
	connectMs: 0,
	connectRetries: 0,
	acquired: false,
	queries: 0,
	transaction: "none",
	closed: "none",
});

/** Hands the stats to the hook and the log (`@middy-conn/mysql: invocation stats`). */
export const reportMysqlStats = (
	sink: StatsSink<MysqlConnectionStats>,
	stats: MysqlConnectionStats,
	request: Request,
): Promise<void> =>
	reportStats(pkg, sink, { ...stats, connectMs: Math.round(stats.connectMs * 1000) / 1000 }, request);
