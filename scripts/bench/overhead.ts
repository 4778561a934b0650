// Overhead: what the middlewares cost an invocation that does not use them. Both are configured as a real
// handler would configure them, and the handler touches neither (scoped mode opens nothing, the HTTP pool stays
// idle). Invocations take microseconds, so a sample times 100 in a row (one timer read per call would dominate).
//
// Each contender runs in a process of its own, the processes taking turns (isolated.ts): the contenders make
// different amounts of garbage, and each process counts the collections it ran.
import middy from "@middy/core";
import type { Context } from "aws-lambda";
import { runIsolatedComparison } from "./isolated.ts";
import { invoker } from "./lambda.ts";
import { loadHttpPool, loadMysql } from "./middlewares.ts";
import type { DbPeer, HttpPeer } from "./peers.ts";
import type { ComparisonResult, Contender } from "./runner.ts";
import type { Mode } from "./settings.ts";

export const NAMES = {
	bare: "bare handler",
	middy: "middy alone",
	noop: "middy + 2 no-op middlewares",
	both: "middy + httpPool + mysqlConnection (untouched)",
	httpPoolOnly: "middy + httpPool (untouched)",
	mysqlOnly: "middy + mysqlConnection (untouched)",
} as const;

const INNER = 100;

type OverheadVariant = keyof typeof NAMES;

/** What a contender's process needs to build this group's contenders. */
interface OverheadArgs {
	http: { origin: string; ca: string };
	db: DbPeer["config"];
}

const NOTES: Record<OverheadVariant, string> = {
	bare: "`async (event, context) => response`, called directly",
	middy: "`middy(handler)` with no middleware",
	noop: "two middlewares whose `before`/`after`/`onError` do nothing: the floor for any two (not a goal)",
	both: "`.use(httpPool(...)).use(mysqlConnection(...))`, defaults (scoped mode)",
	httpPoolOnly: "attribution: httpPool alone",
	mysqlOnly: "attribution: mysqlConnection alone",
};

const respond = async (event: { id: number }, _context: Context) => ({
	statusCode: 200,
	body: `{"id":${event.id}}`,
});

/** The middlewares as a handler would configure them (only asked for when their package loaded). */
const httpPoolOf = (http: Awaited<ReturnType<typeof loadHttpPool>>, args: OverheadArgs) => {
	if (!http.module) throw new Error(http.problem ?? "http-pool did not load");
	return http.module.httpPool({ origin: args.http.origin, connections: 4, connect: { ca: args.http.ca } });
};
const mysqlOf = (db: Awaited<ReturnType<typeof loadMysql>>, args: OverheadArgs) => {
	if (!db.module) throw new Error(db.problem ?? "mysql did not load");
	return db.module.mysqlConnection({ config: args.db });
};

/** One invocation of a variant. */
const buildInvoke = (
	variant: OverheadVariant,
	args: OverheadArgs,
	http: Awaited<ReturnType<typeof loadHttpPool>>,
	db: Awaited<ReturnType<typeof loadMysql>>,
): (() => Promise<unknown>) => {
	const noopMiddleware = () => ({ before: () => {}, after: () => {}, onError: () => {} });
	switch (variant) {
		case "bare":
			return invoker(respond);
		case "middy":
			return invoker(middy(respond));
		case "noop":
			// What any two middlewares cost: middy awaits each before/after hook, even a synchronous no-op.
			return invoker(middy(respond).use(noopMiddleware()).use(noopMiddleware()));
		case "both":
			return invoker(middy(respond).use(httpPoolOf(http, args)).use(mysqlOf(db, args)));
		case "httpPoolOnly":
			return invoker(middy(respond).use(httpPoolOf(http, args)));
		case "mysqlOnly":
			return invoker(middy(respond).use(mysqlOf(db, args)));
	}
};

/** The contenders of this group, as a contender's process builds them (isolated.ts). */
export const buildContenders = async (comparison: string, args: unknown): Promise<Contender[]> => {
	if (comparison !== "overhead") throw new Error(`no overhead comparison ${comparison}`);
	const [http, db] = await Promise.all([loadHttpPool(), loadMysql()]);
	const variants: OverheadVariant[] = ["bare", "middy", "noop"];
	if (http.module && db.module) variants.push("both");
	if (http.module) variants.push("httpPoolOnly");
	if (db.module) variants.push("mysqlOnly");
	return variants.map((variant) => ({
		name: NAMES[variant],
		note: NOTES[variant],
		invoke: buildInvoke(variant, args as OverheadArgs, http, db),
	}));
};

export const runOverheadGroup = async (
	mode: Mode,
	peers: { http: HttpPeer; db: DbPeer },
): Promise<ComparisonResult[]> => {
	const args: OverheadArgs = { http: { origin: peers.http.origin, ca: peers.http.ca }, db: peers.db.config };
	mode.log("Overhead of untouched middlewares (each contender in its own process, taking turns)");
	return [
		await runIsolatedComparison(
			new URL(import.meta.url),
			mode,
			{
				id: "overhead",
				title: "Overhead: middlewares an invocation does not use",
				description:
					"A handler that returns a constant. Each contender runs in a process of its own, and the processes take turns, round by round, so that each pays for the garbage it makes (in one shared process, collections land on whichever contender runs next); each process counts the collections it ran (a PerformanceObserver of `gc` entries) during the recorded rounds. Each sample is the mean of 100 consecutive invocations. The reference is middy alone.",
				reference: NAMES.middy,
				inner: INNER,
			},
			{ budgetMs: 10_000, batch: 10, warmup: 50 },
			args,
		),
	];
};
