// Overhead: what the middlewares cost an invocation that does not use them. Both are configured as a real
// handler would configure them, and the handler touches neither (scoped mode opens nothing, the HTTP pool stays
// idle). Invocations take microseconds, so a sample times 100 in a row (one timer read per call would dominate).
import middy from "@middy/core";
import type { Context } from "aws-lambda";
import { invoker } from "./lambda.ts";
import type { HttpPoolModule, MysqlModule } from "./middlewares.ts";
import type { DbPeer, HttpPeer } from "./peers.ts";
import { type ComparisonResult, type Contender, runComparison } from "./runner.ts";
import { type Mode, pace } from "./settings.ts";

export const NAMES = {
	bare: "bare handler",
	middy: "middy alone",
	noop: "middy + 2 no-op middlewares",
	both: "middy + httpPool + mysqlConnection (untouched)",
	httpPoolOnly: "middy + httpPool (untouched)",
	mysqlOnly: "middy + mysqlConnection (untouched)",
} as const;

const INNER = 100;

const respond = async (event: { id: number }, _context: Context) => ({
	statusCode: 200,
	body: `{"id":${event.id}}`,
});

export const runOverheadGroup = async (
	mode: Mode,
	peers: { http: HttpPeer; db: DbPeer; httpPool: HttpPoolModule | undefined; mysql: MysqlModule | undefined },
): Promise<ComparisonResult[]> => {
	const { http, db, httpPool, mysql } = peers;
	const contenders: Contender[] = [];
	const httpOptions = { origin: http.origin, connections: 4, connect: { ca: http.ca } };

	contenders.push({
		name: NAMES.bare,
		note: "`async (event, context) => response`, called directly",
		invoke: invoker(respond),
	});
	const plain = middy(respond);
	contenders.push({
		name: NAMES.middy,
		note: "`middy(handler)` with no middleware",
		invoke: invoker(plain),
	});
	// What any two middlewares cost: middy awaits each before/after hook, even a synchronous no-op.
	const noopMiddleware = () => ({ before: () => {}, after: () => {}, onError: () => {} });
	const noop = middy(respond).use(noopMiddleware()).use(noopMiddleware());
	contenders.push({
		name: NAMES.noop,
		note: "two middlewares whose `before`/`after`/`onError` do nothing: the floor for any two (not a goal)",
		invoke: invoker(noop),
	});
	if (httpPool && mysql) {
		const both = middy(respond)
			.use(httpPool.httpPool(httpOptions))
			.use(mysql.mysqlConnection({ config: db.config }));
		contenders.push({
			name: NAMES.both,
			note: "`.use(httpPool(...)).use(mysqlConnection(...))`, defaults (scoped mode)",
			invoke: invoker(both),
		});
	}
	if (httpPool) {
		const withHttp = middy(respond).use(httpPool.httpPool(httpOptions));
		contenders.push({
			name: NAMES.httpPoolOnly,
			note: "attribution: httpPool alone",
			invoke: invoker(withHttp),
		});
	}
	if (mysql) {
		const withDb = middy(respond).use(mysql.mysqlConnection({ config: db.config }));
		contenders.push({
			name: NAMES.mysqlOnly,
			note: "attribution: mysqlConnection alone",
			invoke: invoker(withDb),
		});
	}

	mode.log("Overhead of untouched middlewares");
	return [
		await runComparison(
			{
				id: "overhead",
				title: "Overhead: middlewares an invocation does not use",
				description:
					"A handler that returns a constant. Each sample is the mean of 100 consecutive invocations. The reference is middy alone.",
				reference: NAMES.middy,
				contenders,
				inner: INNER,
				...pace(mode, { budgetMs: 10_000, batch: 10, warmup: 50 }),
			},
			mode.log,
		),
	];
};
