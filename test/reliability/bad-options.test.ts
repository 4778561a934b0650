// Every option of both middlewares, with values each must refuse: a wrong type, a number out of range, an unknown
// key (at every level), a malformed URL or host. Each is refused when the middleware is created (at cold start,
// not at the first query or request) with a TypeError whose message names the option, and repeats none of the
// secrets it was given.
//
// The packages' own option tests (packages/*/test/options.test.ts) hold a first table each; this one goes through
// every option of both, so a row here that looks like one there tries another value.
import { httpPool } from "@middy-conn/http-pool";
import { mysqlConnection } from "@middy-conn/mysql";
import { describe, expect, it } from "vitest";

const SECRET = "s3cret-Hunter2";
/** The largest delay a Node timer takes: setTimeout fires after 1 ms instead beyond it. */
const TIMER_LIMIT = 2 ** 31 - 1;

type Row = [label: string, options: unknown, option: string];

const refusal = (create: () => unknown): Error => {
	try {
		create();
	} catch (error) {
		return error as Error;
	}
	throw new Error("accepted");
};

/** A TypeError, at creation, that names the option, and says nothing secret. */
const expectRefused = (create: () => unknown, option: string) => {
	const error = refusal(create);
	expect(error).toBeInstanceOf(TypeError);
	expect(error.message).toContain(`'${option}'`);
	expect(`${error.message}\n${error.stack}\n${JSON.stringify(error)}`).not.toContain(SECRET);
};

const httpPoolRows: Row[] = [
	["origin: a number", { origin: 443 }, "origin"],
	["origin: empty", { origin: "" }, "origin"],
	["origin: scheme-relative", { origin: "//api.example.com" }, "origin"],
	["origin: a scheme and no host", { origin: "https://" }, "origin"],
	["origin: a WebSocket URL", { origin: "wss://api.example.com" }, "origin"],
	["origin: a port out of range", { origin: "https://api.example.com:70000" }, "origin"],
	["origin: a space in the host", { origin: "https://api example.com" }, "origin"],
	["origin: credentials", { origin: `https://user:${SECRET}@api.example.com` }, "origin"],
	["origin: a fragment", { origin: "https://api.example.com/#top" }, "origin"],
	["connections: a string", { connections: "4" }, "connections"],
	["connections: negative", { connections: -1 }, "connections"],
	["connections: Infinity", { connections: Number.POSITIVE_INFINITY }, "connections"],
	["keepAliveTimeout: a string", { keepAliveTimeout: "4s" }, "keepAliveTimeout"],
	["keepAliveTimeout: negative", { keepAliveTimeout: -1 }, "keepAliveTimeout"],
	["keepAliveMaxTimeout: a string", { keepAliveMaxTimeout: "30s" }, "keepAliveMaxTimeout"],
	["keepAliveMaxTimeout: 0", { keepAliveMaxTimeout: 0 }, "keepAliveMaxTimeout"],
	["connectTimeout: 0", { connectTimeout: 0 }, "connectTimeout"],
	["connectTimeout: a boolean", { connectTimeout: true }, "connectTimeout"],
	["headersTimeout: a string", { headersTimeout: "10s" }, "headersTimeout"],
	["headersTimeout: NaN", { headersTimeout: Number.NaN }, "headersTimeout"],
	["bodyTimeout: negative", { bodyTimeout: -1 }, "bodyTimeout"],
	["bodyTimeout: a boolean", { bodyTimeout: false }, "bodyTimeout"],
	["connect: null", { connect: null }, "connect"],
	["connect: an array", { connect: [] }, "connect"],
	["connect.servername: a number", { connect: { servername: 1 } }, "connect.servername"],
	["connect.ca: an object", { connect: { ca: { pem: "x" } } }, "connect.ca"],
	["connect.rejectUnauthorized: 0", { connect: { rejectUnauthorized: 0 } }, "connect.rejectUnauthorized"],
	["allowH2: 1", { allowH2: 1 }, "allowH2"],
	["retry: an array", { retry: [] }, "retry"],
	["retry: null", { retry: null }, "retry"],
	["retry.maxRetries: fractional", { retry: { maxRetries: 1.5 } }, "retry.maxRetries"],
	["retry.maxRetries: a string", { retry: { maxRetries: "2" } }, "retry.maxRetries"],
	["retry.minTimeout: negative", { retry: { minTimeout: -1 } }, "retry.minTimeout"],
	["retry.maxTimeout: a string", { retry: { maxTimeout: "1s" } }, "retry.maxTimeout"],
	["retry.timeoutFactor: below 1", { retry: { timeoutFactor: 0.5 } }, "retry.timeoutFactor"],
	["retry: a typo", { retry: { maxRetry: 3 } }, "retry.maxRetry"],
	["interceptors: null", { interceptors: null }, "interceptors"],
	["interceptors: a null entry", { interceptors: [null] }, "interceptors[0]"],
	["contextKey: a number", { contextKey: 7 }, "contextKey"],
	["waitUntilReserve: a string", { waitUntilReserve: "500" }, "waitUntilReserve"],
	["waitUntilReserve: NaN", { waitUntilReserve: Number.NaN }, "waitUntilReserve"],
	["waitUntilTimeout: negative", { waitUntilTimeout: -1 }, "waitUntilTimeout"],
	["logger: null", { logger: null }, "logger"],
	["logger: a function", { logger: console.log }, "logger"],
	["logger: a string", { logger: "console" }, "logger"],
	["onStats: an object", { onStats: {} }, "onStats"],
	["logStats: 1", { logStats: 1 }, "logStats"],
	["a typo", { connection: 4 }, "connection"],
];

const config = { host: "db.example.com", user: "app", password: SECRET, database: "app" };
const pool = (extra: Record<string, unknown>) => ({ mode: "pool", config: { ...config, ...extra } });
const scoped = (extra: Record<string, unknown>) => ({ config: { ...config, ...extra } });

const mysqlRows: Row[] = [
	["mode: a number", { config, mode: 1 }, "mode"],
	["mode: capitalised", { config, mode: "Pool" }, "mode"],
	["transaction: a number", { config, transaction: 1 }, "transaction"],
	["transaction: null", { config, transaction: null }, "transaction"],
	[
		"transaction.isolationLevel: a number",
		{ config, transaction: { isolationLevel: 2 } },
		"transaction.isolationLevel",
	],
	[
		"transaction.isolationLevel: lower case",
		{ config, transaction: { isolationLevel: "read committed" } },
		"transaction.isolationLevel",
	],
	["transaction: a typo", { config, transaction: { level: "SERIALIZABLE" } }, "transaction.level"],
	["contextKey: a boolean", { config, contextKey: true }, "contextKey"],
	["contextKey: a Lambda context method", { config, contextKey: "getRemainingTimeInMillis" }, "contextKey"],
	["contextKey: __proto__", { config, contextKey: "__proto__" }, "contextKey"],
	["logger: a string", { config, logger: "console" }, "logger"],
	["logger: null", { config, logger: null }, "logger"],
	["onStats: an object", { config, onStats: {} }, "onStats"],
	["logStats: 1", { config, logStats: 1 }, "logStats"],
	["closeTimeout: above 60 s", { config, closeTimeout: 60_001 }, "closeTimeout"],
	["closeTimeout: a string", { config, closeTimeout: "1000" }, "closeTimeout"],
	["a typo", { config, logstats: true }, "logstats"],
	["config: a number", { config: 42 }, "config"],
	["config: an array", { config: [config] }, "config"],
	["config.host: a boolean", scoped({ host: true }), "config.host"],
	["config.host: another scheme", scoped({ host: "tcp://db.example.com" }), "config.host"],
	["config.host: credentials", scoped({ host: `app:${SECRET}@db.example.com` }), "config.host"],
	["config.host: a bracketed IPv6 with its port", scoped({ host: "[::1]:3306" }), "config.host"],
	["config.host: a bracketed IPv6", scoped({ host: "[::1]" }), "config.host"],
	["config.host: a semicolon", scoped({ host: "db.example.com;drop" }), "config.host"],
	["config.host: a label that starts with '-'", scoped({ host: "-db.example.com" }), "config.host"],
	["config.host: an empty label", scoped({ host: "db..example.com" }), "config.host"],
	["config.host: longer than DNS allows", scoped({ host: `${"a".repeat(60)}.`.repeat(5) }), "config.host"],
	["config.port: fractional", scoped({ port: 3306.5 }), "config.port"],
	["config.port: negative", scoped({ port: -1 }), "config.port"],
	["config.port: NaN", scoped({ port: Number.NaN }), "config.port"],
	["config.user: a number", scoped({ user: 1 }), "config.user"],
	["config.password: an object", scoped({ password: { value: SECRET } }), "config.password"],
	["config.database: a number", scoped({ database: 1 }), "config.database"],
	["config.socketPath: empty", { config: { socketPath: "", user: "app" } }, "config.socketPath"],
	// Options this middleware does not read go to mysql2 as they are: their values are mysql2's to judge.
	["config.uri: no host", { config: { uri: "mysql:///app" } }, "config.uri"],
	[
		"config.uri: another scheme",
		{ config: { uri: `http://app:${SECRET}@db.example.com/app` } },
		"config.uri",
	],
	[
		"config.uri: malformed, with credentials",
		{ config: { uri: `mysql://app:${SECRET}@db example.com/app` } },
		"config.uri",
	],
	["config.uri: a number", { config: { uri: 3306 } }, "config.uri"],
	["config.connectTimeout: 0", scoped({ connectTimeout: 0 }), "config.connectTimeout"],
	["config.connectTimeout: a string", scoped({ connectTimeout: "5s" }), "config.connectTimeout"],
	[
		"config.connectTimeout: beyond a timer's range",
		scoped({ connectTimeout: TIMER_LIMIT + 1 }),
		"config.connectTimeout",
	],
	["config.ssl: an unknown profile", scoped({ ssl: "aws" }), "config.ssl"],
	["config.ssl: a number", scoped({ ssl: 1 }), "config.ssl"],
	["config.ssl: an array", scoped({ ssl: [] }), "config.ssl"],
	["config.ssl: null", scoped({ ssl: null }), "config.ssl"],
	["config.maxPreparedStatements: 0", scoped({ maxPreparedStatements: 0 }), "config.maxPreparedStatements"],
	["config: a typo", scoped({ hostname: "db.example.com" }), "config.hostname"],
	["config: a misspelt password", scoped({ passwd: SECRET }), "config.passwd"],
	["config.connectionLimit: a string (pool)", pool({ connectionLimit: "2" }), "config.connectionLimit"],
	["config.connectionLimit: fractional (pool)", pool({ connectionLimit: 1.5 }), "config.connectionLimit"],
	["config.maxIdle: negative (pool)", pool({ maxIdle: -1 }), "config.maxIdle"],
	["config.idleTimeout: negative (pool)", pool({ idleTimeout: -1 }), "config.idleTimeout"],
	[
		"config.idleTimeout: beyond a timer's range (pool)",
		pool({ idleTimeout: TIMER_LIMIT + 1 }),
		"config.idleTimeout",
	],
	["config.queueLimit: a string (pool)", pool({ queueLimit: "10" }), "config.queueLimit"],
	[
		"config.waitForConnections: a string (pool)",
		pool({ waitForConnections: "yes" }),
		"config.waitForConnections",
	],
	["config.resetOnRelease: a string (pool)", pool({ resetOnRelease: "false" }), "config.resetOnRelease"],
	["config.maxIdle: in scoped mode", scoped({ maxIdle: 1 }), "config.maxIdle"],
];

describe("httpPool(): every option refuses what it cannot use", () => {
	it.each(httpPoolRows)("%s", (_label, options, option) => {
		expectRefused(() => httpPool(options as never), option);
	});

	it.each([
		["a string", "https://api.example.com"],
		["null", null],
		["an array", []],
	])("options that are %s: a TypeError", (_label, options) => {
		const error = refusal(() => httpPool(options as never));
		expect(error).toBeInstanceOf(TypeError);
		expect(error.message).toMatch(/options must be an object/);
	});

	it.each([
		["connectTimeout", { connectTimeout: TIMER_LIMIT + 1 }],
		["headersTimeout", { headersTimeout: 1e10 }],
		["bodyTimeout", { bodyTimeout: 1e10 }],
		["waitUntilTimeout", { waitUntilTimeout: Number.POSITIVE_INFINITY }],
		["retry.maxTimeout", { retry: { maxTimeout: 1e10 } }],
	])("%s beyond a timer's range (2^31 - 1 ms) is refused", (option, options) => {
		expectRefused(() => httpPool(options as never), option);
	});

	it.each([["awsRequestId"], ["getRemainingTimeInMillis"], ["waitUntil"]])(
		"contextKey %s, a key of the Lambda context (or waitUntil), is refused as mysqlConnection() does",
		(contextKey) => {
			expectRefused(() => httpPool({ contextKey }), "contextKey");
		},
	);

	it("a malformed origin's error does not repeat the password in it", () => {
		expectRefused(() => httpPool({ origin: `https://user:${SECRET}@api example.com` }), "origin");
	});

	it("an unknown connect option (a typo) is said at cold start, naming it and what was meant", () => {
		// Node's tls takes the connect options as they are: a newer Node may know a key this package does not, so
		// an unknown key is a warning rather than an error (a typo here leaves verification on, and says so)
		const warnings: string[] = [];
		const logger = { info() {}, warn: (message: string) => warnings.push(message), error() {} };
		httpPool({ connect: { rejectUnauthorised: false } as never, logger });
		expect(warnings).toEqual([
			"@middy-conn/http-pool: 'connect.rejectUnauthorised' is not an option Node's tls knows (did you mean 'rejectUnauthorized'?); it is passed on as it is",
		]);
	});
});

describe("mysqlConnection(): every option refuses what it cannot use", () => {
	it.each(mysqlRows)("%s", (_label, options, option) => {
		expectRefused(() => mysqlConnection(options as never), option);
	});

	it.each([
		["a string", "mysql://db.example.com"],
		["null", null],
		["an array", []],
	])("options that are %s: a TypeError", (_label, options) => {
		const error = refusal(() => mysqlConnection(options as never));
		expect(error).toBeInstanceOf(TypeError);
		expect(error.message).toMatch(/options must be an object/);
	});

	it("accepts the hosts a resolver would: names, IPv4, IPv6 without brackets, a trailing dot", () => {
		for (const host of [
			"db",
			"db.example.com",
			"my_db.internal",
			"10.0.0.7",
			"::1",
			"fd00::7",
			"db.example.com.",
		]) {
			expect(() => mysqlConnection({ config: { ...config, host } })).not.toThrow();
		}
	});

	it("says at cold start that an ssl field is unknown (a typo leaves verification as it was), naming what was meant", () => {
		const warnings: string[] = [];
		const logger = { info() {}, warn: (message: string) => warnings.push(message), error() {} };
		mysqlConnection({ config: { ...config, ssl: { rejectUnauthorised: false } as never }, logger });
		expect(warnings).toEqual([
			"@middy-conn/mysql: 'ssl.rejectUnauthorised' is not an option Node's tls knows (did you mean 'rejectUnauthorized'?); it is passed on as it is",
		]);
	});
});
