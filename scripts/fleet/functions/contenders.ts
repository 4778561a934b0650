// The fleet simulation's function (scripts/fleet.ts): one module, bundled once, run in every execution environment;
// FLEET_CONTENDER says which way it reaches MySQL. Every contender does the same unit of work in the same Middy
// handler shape, so that the only difference between them is how the connection is opened, kept and closed:
//
//   START TRANSACTION
//   SELECT n FROM fleet_counters WHERE contender = ? AND slot = ? FOR UPDATE
//   …FLEET_WORK_MS of work while the connection (and the row lock) is held…
//   UPDATE fleet_counters SET n = n + 1 WHERE contender = ? AND slot = ?
//   COMMIT
//
// Each environment has a row of its own (`slot`): no environment waits on another's lock, so what limits the fleet
// is the number of connections the server accepts, not lock contention. The driver sums the rows afterwards and
// compares them with the invocations that succeeded.
//
// The connection's stats for each invocation are printed as one line (STATS_MARK, then JSON with the request id;
// see contract.ts): the middleware's `onStats` object as it is (whatever fields it has: `connectRetries` and, maybe,
// more), and for serverless-mysql the figures its event callbacks give. The middleware reports on every path,
// failures included; serverless-mysql's line is written when the handler ends, which for a handler still running
// after Middy's early timeout is later (in a later thaw) or never.
import middy from "@middy/core";
import { type MysqlConnectionOptions, mysqlConnection } from "@middy-conn/mysql";
import type { Context } from "aws-lambda";
import serverlessMysql from "serverless-mysql";
import { CONTENDERS, type ContenderKey, type FleetAnswer, type FleetEvent, STATS_MARK } from "../contract.ts";

const required = (name: string): string => {
	const value = process.env[name];
	if (!value) throw new Error(`environment variable ${name} is not set`);
	return value;
};

const contender = process.env.FLEET_CONTENDER as ContenderKey;
const workMs = Number(process.env.FLEET_WORK_MS ?? 75);

const config = {
	host: required("DB_HOST"),
	port: Number(process.env.DB_PORT ?? 3306),
	user: required("DB_USER"),
	password: required("DB_PASSWORD"),
	database: required("DB_NAME"),
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const reportStats = (requestId: string, stats: object) =>
	console.log(`${STATS_MARK}${JSON.stringify({ requestId, stats })}`);

/** The statements every contender sends, through whatever `query` it has. */
interface Statements {
	begin(): Promise<unknown>;
	query(sql: string, values: unknown[]): Promise<unknown>;
	commit(): Promise<unknown>;
}

const unitOfWork = async (db: Statements, event: FleetEvent): Promise<FleetAnswer> => {
	const { slot } = event;
	if (!Number.isSafeInteger(slot)) throw new TypeError("slot must be an integer");
	await db.begin();
	const rows = (await db.query("SELECT n FROM fleet_counters WHERE contender = ? AND slot = ? FOR UPDATE", [
		contender,
		slot,
	])) as Array<{ n: number }>;
	// The function's own work, with the connection held: what makes connections scarce at fleet scale.
	await sleep(workMs);
	await db.query("UPDATE fleet_counters SET n = n + 1 WHERE contender = ? AND slot = ?", [contender, slot]);
	await db.commit();
	return { slot, n: Number(rows[0]?.n ?? Number.NaN) + 1 };
};

// Middy's early timeout fires 250 ms before Lambda's, as in the examples: time for the middleware to clean up.
const middyOptions = { timeoutEarlyInMillis: 250 };

const viaMiddleware = () => {
	// `connectRetry: false` and `serverPressure: false` are passed only when their contender runs, and typed
	// loosely: the driver runs such a contender only when the middleware has the option (an unknown option is a
	// TypeError at cold start), and this file must compile against a middleware without it too.
	const without: Partial<Record<ContenderKey, Record<string, unknown>>> = {
		"scoped-no-retry": { connectRetry: false },
		"pool-no-pressure": { serverPressure: false },
	};
	const extra = (without[contender] ?? {}) as Partial<MysqlConnectionOptions>;
	const options: MysqlConnectionOptions =
		contender === "pool" || contender === "pool-no-pressure"
			? { mode: "pool", config: { ...config, connectionLimit: 1 }, ...extra }
			: { mode: "scoped", config, ...extra };
	return middy<FleetEvent, FleetAnswer>(middyOptions)
		.use(
			mysqlConnection({
				...options,
				onStats: (stats, request) => reportStats(request.context.awsRequestId, stats),
			}),
		)
		.handler((event, context) =>
			unitOfWork(
				{
					begin: () => context.db.beginTransaction(),
					query: async (sql, values) => (await context.db.query(sql, values))[0],
					commit: () => context.db.commit(),
				},
				event,
			),
		);
};

const viaServerlessMysql = () => {
	// What its callbacks tell, counted for the environment (one invocation at a time: the difference across an
	// invocation is that invocation's).
	const counts = { connectRetries: 0, connects: 0, connectErrors: 0, quits: 0, zombiesKilled: 0 };
	// Its README's usage: one instance at module scope, `query` in the handler, `end()` before returning.
	const mysql = serverlessMysql({
		config,
		onRetry: () => counts.connectRetries++,
		onConnect: () => counts.connects++,
		onConnectError: () => counts.connectErrors++,
		onClose: () => counts.quits++,
		onKill: () => counts.zombiesKilled++,
	});
	return middy<FleetEvent, FleetAnswer>(middyOptions).handler(async (event, context: Context) => {
		const before = { ...counts };
		try {
			const answer = await unitOfWork(
				{
					begin: () => mysql.query("START TRANSACTION"),
					query: (sql, values) => mysql.query(sql, values),
					commit: () => mysql.query("COMMIT"),
				},
				event,
			);
			await mysql.end();
			return answer;
		} finally {
			const delta = Object.fromEntries(
				Object.entries(counts).map(([key, value]) => [key, value - before[key as keyof typeof counts]]),
			);
			reportStats(context.awsRequestId, { ...delta, connectionKept: mysql.getClient() !== null });
		}
	});
};

if (!(CONTENDERS as readonly string[]).includes(contender)) {
	throw new Error(`FLEET_CONTENDER must be one of ${CONTENDERS.join(", ")}, not ${contender}`);
}

export const handler = contender === "serverless-mysql" ? viaServerlessMysql() : viaMiddleware();
