// Options are checked when mysqlConnection() is called, during the cold start: a mistake fails the deployment's
// first invocation with a TypeError that names the option, not a later query with a driver error.
import { readFileSync } from "node:fs";
import mysqlCore from "mysql2";
import { describe, expect, it } from "vitest";
import { defaults, mysqlConnection, mysqlConnectionValidateOptions } from "../src/index.ts";
import { mysql2OptionNames } from "../src/mysql2-adapter.ts";

const config = { host: "db.example.com", user: "app", password: "pw", database: "app" };

const invalid: [string, unknown, string][] = [
	["options missing", undefined, "options must be an object"],
	["config missing", {}, "Missing required option 'config'"],
	["config a string", { config: "mysql://x" }, "Invalid option 'config'"],
	["config null", { config: null }, "Invalid option 'config'"],
	["unknown option", { config, pool: true }, "Unknown option 'pool'"],
	["mode unknown", { config, mode: "cluster" }, `Option 'mode' must be one of ["scoped","pool"]`],
	["transaction a string", { config, transaction: "yes" }, "Invalid option 'transaction'"],
	[
		"isolation level misspelt",
		{ config, transaction: { isolationLevel: "READ-COMMITTED" } },
		"Option 'transaction.isolationLevel' must be one of",
	],
	[
		"transaction unknown key",
		{ config, transaction: { readOnly: true } },
		"Unknown option 'transaction.readOnly'",
	],
	["contextKey empty", { config, contextKey: "" }, "Option 'contextKey' must have length >= 1"],
	["contextKey a number", { config, contextKey: 1 }, "Option 'contextKey' must be string"],
	[
		"contextKey a Lambda key",
		{ config, contextKey: "awsRequestId" },
		"Option 'contextKey' must not be a key",
	],
	["logger without methods", { config, logger: { log() {} } }, "Invalid option 'logger'"],
	["logger true", { config, logger: true }, "Invalid option 'logger'"],
	["onStats not a function", { config, onStats: "log" }, "Option 'onStats' must be instanceof Function"],
	["logStats a string", { config, logStats: "yes" }, "Option 'logStats' must be boolean"],
	["closeTimeout zero", { config, closeTimeout: 0 }, "Option 'closeTimeout' must be >= 1"],
	["closeTimeout fractional", { config, closeTimeout: 1.5 }, "Option 'closeTimeout' must be integer"],
	["connectRetry true", { config, connectRetry: true }, "Invalid option 'connectRetry'"],
	[
		"connectRetry attempts zero",
		{ config, connectRetry: { attempts: 0 } },
		"Option 'connectRetry.attempts' must be >= 1",
	],
	[
		"serverPressure in scoped mode",
		{ config, serverPressure: { threshold: 0.5 } },
		`Option 'serverPressure' applies to mode "pool" only`,
	],
	[
		"serverPressure threshold zero",
		{ config, mode: "pool", serverPressure: { threshold: 0 } },
		"Option 'serverPressure.threshold' must be > 0",
	],
	[
		"connectRetry unknown key",
		{ config, connectRetry: { retries: 3 } },
		"Unknown option 'connectRetry.retries'",
	],
	["host not a string", { config: { ...config, host: 42 } }, "Option 'config.host' must be string"],
	["host empty", { config: { ...config, host: "" } }, "Option 'config.host' must have length >= 1"],
	["no host", { config: { user: "app" } }, "Missing required option 'config.host'"],
	[
		"a URL as host",
		{ config: { ...config, host: "mysql://db.example.com" } },
		"Option 'config.host' must be a host name",
	],
	[
		"a host with spaces",
		{ config: { ...config, host: "db example.com" } },
		"Option 'config.host' must be a host name",
	],
	[
		"a host with its port",
		{ config: { ...config, host: "db.example.com:3306" } },
		"Option 'config.host' must not include the port",
	],
	["port zero", { config: { ...config, port: 0 } }, "Option 'config.port' must be >= 1"],
	["port too high", { config: { ...config, port: 65_536 } }, "Option 'config.port' must be <= 65535"],
	["port a string", { config: { ...config, port: "3306" } }, "Option 'config.port' must be integer"],
	[
		"password not a string",
		{ config: { ...config, password: 1234 } },
		"Option 'config.password' must be string",
	],
	[
		"connectTimeout negative",
		{ config: { ...config, connectTimeout: -1 } },
		"Option 'config.connectTimeout' must be >= 1",
	],
	[
		"a typo in config",
		{ config: { ...config, hots: "x" } },
		"Unknown option 'config.hots': mysql2 does not know it (did you mean 'host'?)",
	],
	[
		"a typo of an option the middleware does not read",
		{ config: { ...config, multipleStatement: true } },
		"Unknown option 'config.multipleStatement': mysql2 does not know it (did you mean 'multipleStatements'?)",
	],
	["malformed uri", { config: { uri: "not a url" } }, "Invalid option 'config.uri'"],
	["uri of another scheme", { config: { uri: "postgres://u:p@h/db" } }, "Invalid option 'config.uri'"],
	[
		"deprecated ssl profile name",
		{ config: { ...config, ssl: "Amazon RDS" } },
		`Option 'config.ssl' must be an object or "rds"`,
	],
	["ssl true", { config: { ...config, ssl: true } }, "Invalid option 'config.ssl'"],
	[
		"gracefulEnd (closing is the middleware's)",
		{ config: { ...config, gracefulEnd: true } },
		"Option 'config.gracefulEnd' is not supported",
	],
	[
		"pool option in scoped mode",
		{ config: { ...config, connectionLimit: 2 } },
		`Option 'config.connectionLimit' applies to mode "pool" only`,
	],
	[
		"connectionLimit zero",
		{ config: { ...config, connectionLimit: 0 }, mode: "pool" },
		"Option 'config.connectionLimit' must be >= 1",
	],
	[
		"queueLimit negative",
		{ config: { ...config, queueLimit: -1 }, mode: "pool" },
		"Option 'config.queueLimit' must be >= 0",
	],
	[
		"resetOnRelease true",
		{ config: { ...config, resetOnRelease: true }, mode: "pool" },
		"Invalid option 'config.resetOnRelease'",
	],
];

describe("mysqlConnection() options", () => {
	it.each(invalid)("rejects %s with a TypeError naming the option", (_case, options, message) => {
		const call = () => mysqlConnection(options as never);
		expect(call).toThrow(TypeError);
		expect(call).toThrow(message);
		try {
			call();
		} catch (error) {
			expect((error as Error & { cause?: { package?: string } }).cause?.package).toBe("@middy-conn/mysql");
		}
	});

	it.each([
		["an object config", { config }],
		["a config function", { config: () => config }],
		["a mysql:// uri", { config: { uri: "mysql://app:pw@db.example.com:3306/app" } }],
		["an IPv6 host", { config: { ...config, host: "::1" } }],
		[
			"options of mysql2 that the middleware does not read, passed as they are",
			{
				config: {
					...config,
					multipleStatements: true,
					jsonStrings: true,
					disableEval: true,
					typeCast: false,
					flags: ["-FOUND_ROWS"],
					infileStreamFactory: () => undefined,
				},
			},
		],
		["a socket path", { config: { socketPath: "/var/run/mysqld/mysqld.sock", user: "app" } }],
		["the rds TLS shorthand", { config: { ...config, ssl: "rds" } }],
		["an ssl object", { config: { ...config, ssl: { ca: "pem", rejectUnauthorized: true } } }],
		[
			"pool options in pool mode",
			{
				config: { ...config, connectionLimit: 2, maxIdle: 1, idleTimeout: 30_000, queueLimit: 10 },
				mode: "pool",
			},
		],
		["an isolation level", { config, transaction: { isolationLevel: "SERIALIZABLE" } }],
		["a silenced logger", { config, logger: false }],
		[
			"everything",
			{
				config,
				mode: "pool",
				transaction: true,
				contextKey: "orders",
				logger: console,
				onStats() {},
				logStats: true,
				closeTimeout: 500,
			},
		],
	])("accepts %s", (_case, options) => {
		expect(() => mysqlConnection(options as never)).not.toThrow();
	});

	it("fills in the documented defaults", () => {
		const settings = mysqlConnectionValidateOptions({ config });
		expect(settings).toMatchObject({
			mode: "scoped",
			transaction: false,
			contextKey: "db",
			logStats: false,
			closeTimeout: 1000,
			connectRetry: { attempts: 10, baseDelay: 25, maxDelay: 1000 },
		});
		expect(mysqlConnectionValidateOptions({ config, connectRetry: { attempts: 3 } }).connectRetry).toEqual({
			attempts: 3,
			baseDelay: 25,
			maxDelay: 1000,
		});
		expect(mysqlConnectionValidateOptions({ config, connectRetry: false }).connectRetry).toBe(false);
		expect(defaults.logger).toBe(console);
	});

	it("does not touch the network when the middleware is created", () => {
		// an unreachable host is fine until an invocation uses context.db
		expect(() => mysqlConnection({ config: { host: "203.0.113.1", port: 3306 } })).not.toThrow();
	});
});

// Every option the installed mysql2 knows is accepted, except the few the README says belong to the middleware:
// run on the latest and on the floor mysql2 (MIDDY_CONN_DRIVERS=floor), so that an option either release knows is
// covered.
describe("mysql2's own options, as the installed mysql2 names them", () => {
	/** The README's list: "`pool`, `Promise`, `isServer` and `gracefulEnd` belong to the middleware". */
	const documentedRefusals = (() => {
		const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
		const sentence = /((?:`\w+`(?:, | and )?)+) belong to the middleware/.exec(readme)?.[1];
		if (!sentence) throw new Error("the README no longer says which mysql2 options belong to the middleware");
		return [...sentence.matchAll(/`(\w+)`/g)].map((match) => match[1] as string);
	})();

	// A value of the right type for the options the middleware checks itself; the others take mysql2's own default,
	// or any value (mysql2 is their judge).
	const samples: Record<string, unknown> = {
		host: "db.example.com",
		port: 3307,
		socketPath: "/var/run/mysqld/mysqld.sock",
		uri: "mysql://db.example.com/app",
		user: "app",
		password: "pw",
		password2: "pw2",
		password3: "pw3",
		passwordSha1: "0123456789abcdef0123456789abcdef01234567",
		database: "app",
		connectTimeout: 1000,
		ssl: { rejectUnauthorized: true },
		maxPreparedStatements: 16,
		connectionLimit: 2,
		maxIdle: 1,
		idleTimeout: 1000,
		queueLimit: 0,
		waitForConnections: true,
		resetOnRelease: false,
		charset: "utf8mb4",
		timezone: "Z",
	};
	const { ConnectionConfig } = mysqlCore as unknown as { ConnectionConfig: new (options: object) => object };
	const mysql2Defaults = new ConnectionConfig({}) as Record<string, unknown>;
	const sampleOf = (name: string) => (name in samples ? samples[name] : mysql2Defaults[name]);
	const validate = (name: string) => () =>
		mysqlConnectionValidateOptions({
			mode: "pool",
			config: { host: "db.example.com", [name]: sampleOf(name) } as never,
		});

	it.each(mysql2OptionNames().filter((name) => !documentedRefusals.includes(name)))(
		"accepts config.%s",
		(name) => {
			expect(validate(name)).not.toThrow();
		},
	);

	it.each(documentedRefusals)("refuses config.%s, naming it and why", (name) => {
		expect(validate(name)).toThrow(TypeError);
		expect(validate(name)).toThrow(`Option 'config.${name}' is not supported: `);
	});

	it("refuses exactly the documented options: no other name of mysql2's is refused", () => {
		const refused = [...new Set([...mysql2OptionNames(), ...documentedRefusals])].filter((name) => {
			try {
				validate(name)();
				return false;
			} catch {
				return true;
			}
		});
		expect(refused.sort()).toEqual([...documentedRefusals].sort());
	});
});
