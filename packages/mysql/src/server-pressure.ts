// Pool mode at fleet scale. Each execution environment keeps its pooled connection while Lambda has it frozen, and
// every one of those idle connections counts against the server's max_connections: a fleet of 300 environments
// holds 300 connections, most of them doing nothing. When the server is near full, a burst of new environments
// (or the environments that had to drop their connection) is refused, and nothing frees a slot: the holders are
// frozen.
//
// So a warm pool reads the server's load now and then, when an invocation gives its connection back: the share of
// max_connections in use. While that share is at or above `threshold`, the pool stops keeping connections warm:
// each invocation's connection is ended (QUIT) instead of reset and released, and the environment behaves as in
// scoped mode until the load falls. A connect of this pool that the server refused because it was full counts as
// such a reading, at no cost. The reading is the pool's (per execution environment), taken at most once per
// `checkInterval` of wall-clock time, so most invocations pay nothing: two short statements, at most once per
// interval, on the invocation's own connection after its work is done.
//
// Neither statement changes session state (RDS Proxy does not pin on them).
import type { Connection, RowDataPacket } from "mysql2/promise";

export interface ServerPressureOptions {
	/** The share of max_connections in use at which connections stop being kept warm. Default 0.8. */
	threshold?: number;
	/** How often, at most, the load is read (ms of wall-clock time). Default 10000. */
	checkInterval?: number;
}

export type ServerPressure = Required<ServerPressureOptions>;

export const serverPressureDefaults: ServerPressure = { threshold: 0.8, checkInterval: 10_000 };

/** What a warm pool knows of its server's load (per pool, so per execution environment and target). */
export interface LoadReading {
	/** When the load was last read or learnt (Date.now()), if ever. */
	at: number | undefined;
	/** The server's max_connections, read once. */
	maxConnections: number | undefined;
	/** The server was near full at the last reading. */
	high: boolean;
}

export const newLoadReading = (): LoadReading => ({ at: undefined, maxConnections: undefined, high: false });

/** A connect of the pool was refused because the server was full: that is a reading, and a high one. */
export const noteServerFull = (reading: LoadReading): void => {
	reading.at = Date.now();
	reading.high = true;
};

/** True when a reading is due. */
export const loadCheckDue = (reading: LoadReading, policy: ServerPressure): boolean =>
	reading.at === undefined || Date.now() - reading.at >= policy.checkInterval;

/**
 * Reads the server's load on `connection` (idle, the invocation's work done) into `reading`. A failure keeps the
 * last reading: the reset or QUIT that follows meets the same broken connection and handles it.
 */
export const readLoad = async (
	connection: Connection,
	reading: LoadReading,
	policy: ServerPressure,
): Promise<void> => {
	reading.at = Date.now();
	try {
		if (reading.maxConnections === undefined) {
			const [rows] = await connection.query<RowDataPacket[]>("SELECT @@max_connections AS max");
			reading.maxConnections = Number(rows[0]?.max);
		}
		const [status] = await connection.query<RowDataPacket[]>("SHOW GLOBAL STATUS LIKE 'Threads_connected'");
		const used = Number(status[0]?.Value);
		if (Number.isFinite(used) && Number.isFinite(reading.maxConnections) && reading.maxConnections > 0) {
			reading.high = used >= policy.threshold * reading.maxConnections;
		}
	} catch {
		// the last reading stands
	}
};
