// @middy-conn/mysql: a MySQL connection bound to one Lambda invocation, and closed on every path.
//
//   export const handler = middy<{ id: number }>()
//     .use(mysqlConnection({ config: { host, user, password, database } }))
//     .handler(async (event, context) => {
//       const [rows] = await context.db.query("SELECT * FROM orders WHERE id = ?", [event.id]);
//       return rows;
//     });
//
// Why per invocation: a connection kept at module scope and reused across invocations keeps its session, and
// with it a REPEATABLE READ read view or a transaction that a failed invocation left open. The next invocations
// then read a stale snapshot and miss rows that other functions have committed (seed 003).
import type { MiddlewareObj, Request } from "@middy/core";
import { safeLogger, type WaitUntil } from "@middy-conn/lifecycle";
import { invocationMiddleware, tlsSettingsCheck } from "@middy-conn/lifecycle/internal";
import type { Shared } from "./acquire.ts";
import { InvocationConnection, type InvocationDb } from "./invocation-db.ts";
import {
	configFor,
	type MysqlConnectionOptions,
	mysqlConnectionValidateOptions,
	pkg,
	type ResolvedConfig,
	resolveConfig,
} from "./options.ts";

export type { BackgroundTask, WaitUntil } from "@middy-conn/lifecycle";
export { MiddyConnError } from "@middy-conn/lifecycle";
export type { ConnectRetryOptions } from "./connect-retry.ts";
export { errorCodes } from "./errors.ts";
export type { InvocationDb } from "./invocation-db.ts";
export type {
	IsolationLevel,
	MysqlConfig,
	MysqlConfigOption,
	MysqlConnectionOptions,
} from "./options.ts";
export { defaultConnectTimeout, defaults, mysqlConnectionValidateOptions } from "./options.ts";
export { closeMysqlPools } from "./pool-cache.ts";
export type { ServerPressureOptions } from "./server-pressure.ts";
export type { MysqlConnectionStats } from "./telemetry.ts";

/** The Lambda context as Middy types it. */
type LambdaContext = Request["context"];

/** The context a handler sees behind `mysqlConnection({ contextKey })`. */
export type MysqlContext<TContextKey extends string = "db"> = LambdaContext & {
	[K in TContextKey]: InvocationDb;
} & { waitUntil: WaitUntil };

export const mysqlConnection = <TContextKey extends string = "db">(
	options: MysqlConnectionOptions<TContextKey>,
	// biome-ignore lint/suspicious/noExplicitAny: Middy's own default for a middleware's result type
): MiddlewareObj<unknown, any, Error, MysqlContext<TContextKey>> => {
	const settings = mysqlConnectionValidateOptions(options);
	const { contextKey } = settings;

	// An object config is copied and completed once, on first use (not here: mysqlConnection() runs during the
	// cold start, and "rds" loads a CA bundle).
	let resolved: Promise<ResolvedConfig> | undefined;
	const config = settings.config;
	const logger = safeLogger(settings.logger);
	// The TLS settings are checked when they are seen (at cold start for an object config, at the first connect for
	// a config function or a uri's ssl parameter): verification switched off, or a key that is a typo, is said once.
	const checkTls = tlsSettingsCheck(logger, pkg, {
		option: "ssl",
		instead: 'Pass ssl.ca (or ssl: "rds") to trust the server\'s CA instead',
		driverKeys: ["verifyIdentity"],
	});
	if (typeof config !== "function") checkTls(config.ssl);
	const checked = (config: Promise<ResolvedConfig>) =>
		config.then((ready) => {
			checkTls(ready.driver.ssl);
			return ready;
		});
	const shared: Shared = {
		settings,
		logger,
		resolve:
			typeof config === "function"
				? (request) => checked(configFor(settings, request))
				: () => {
						resolved ??= checked(resolveConfig(config, settings.mode));
						return resolved;
					},
		poolKey: undefined,
	};

	// Before: the connection is registered with the invocation before anything can use it (no I/O: the first
	// statement opens it). After (success): after the background tasks, commit (with the transaction option), then
	// end or reset and release; a failed COMMIT fails the invocation, its error going on to the onError chain.
	// onError (a failure, or Middy's early timeout): roll back; a busy connection was already given up when Middy
	// raised the timeout.
	return invocationMiddleware({
		pkg,
		name: "mysqlConnection",
		contextKey,
		invocationOptions: {
			logger,
			waitUntilTimeout: settings.waitUntilTimeout,
			waitUntilReserve: settings.waitUntilReserve,
		},
		reportsStats: Boolean(settings.onStats || settings.logStats),
		open: (invocation, request) => {
			const connection = new InvocationConnection(shared, invocation, request);
			return { resource: connection, value: connection.db };
		},
	});
};

export default mysqlConnection;
