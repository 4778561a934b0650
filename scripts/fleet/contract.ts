// What the fleet's driver (run.ts) and its function (functions/contenders.ts) agree on. A file of its own: the
// function module reads its environment at import, so the driver must not import it.

/** The contenders, in the order they run. */
export const CONTENDERS = [
	"scoped",
	"scoped-no-retry",
	"pool",
	"pool-no-pressure",
	"serverless-mysql",
] as const;
export type ContenderKey = (typeof CONTENDERS)[number];

/** Prefix of the line that carries one invocation's connection stats: `FLEET_STATS {"requestId", "stats"}`. */
export const STATS_MARK = "FLEET_STATS ";

export interface StatsLine {
	requestId: string;
	stats: Record<string, unknown>;
}

export interface FleetEvent {
	/** The environment's own counter row. */
	slot: number;
}

export interface FleetAnswer {
	slot: number;
	/** The row's count after this invocation's UPDATE. */
	n: number;
}
