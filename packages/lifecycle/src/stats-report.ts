// One invocation's stats, reported once: to the middleware's `onStats` hook, and with `logStats` as one structured
// log line, `<package>: invocation stats`. Telemetry never fails an invocation: a hook that throws is logged.
import type { Request } from "@middy/core";
import type { Logger } from "./logger.ts";

export interface StatsSink<TStats> {
	readonly logger: Logger;
	readonly logStats: boolean;
	readonly onStats: ((stats: TStats, request: Request) => unknown) | undefined;
}

/** True when anything would be done with the stats (so they need not be gathered otherwise). */
export const wantsStats = (sink: StatsSink<never>): boolean => sink.logStats || sink.onStats !== undefined;

/**
 * Hands `stats` to the hook and the log. `logged` adds fields to the log line only (which middleware instance it
 * was, for example); the hook gets `stats` as they are.
 */
export const reportStats = async <TStats extends object>(
	pkg: string,
	sink: StatsSink<TStats>,
	stats: TStats,
	request: Request,
	logged: Record<string, unknown> = {},
): Promise<void> => {
	if (sink.logStats) sink.logger.info(`${pkg}: invocation stats`, { ...logged, ...stats });
	if (!sink.onStats) return;
	try {
		await sink.onStats(stats, request);
	} catch (error) {
		sink.logger.warn(`${pkg}: onStats threw; ignored`, { error: String(error) });
	}
};
