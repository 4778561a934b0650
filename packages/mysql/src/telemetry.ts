// What one invocation's connection did, reported once when it ends: to `onStats`, and as one structured log line
// with `logStats`. Nothing here ever holds a secret: only counts, times and outcomes.
import type { Request } from "@middy/core";
import type { Logger } from "@middy-conn/lifecycle";

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

export interface StatsSink {
	readonly logger: Logger;
	readonly logStats: boolean;
	readonly onStats: ((stats: MysqlConnectionStats, request: Request) => unknown) | undefined;
}

/** Hands the stats to the hook and the log. A failing hook is logged: telemetry never fails an invocation. */
export const reportStats = async (
	sink: StatsSink,
	stats: MysqlConnectionStats,
	request: Request,
): Promise<void> => {
	const snapshot = { ...stats, connectMs: Math.round(stats.connectMs * 1000) / 1000 };
	if (sink.logStats) sink.logger.info("@middy-conn/mysql invocation", snapshot);
	if (!sink.onStats) return;
	try {
		await sink.onStats(snapshot, request);
	} catch (error) {
		sink.logger.warn("@middy-conn/mysql onStats threw; ignored", { error: String(error) });
	}
};
