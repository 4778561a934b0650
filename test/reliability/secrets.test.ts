// A password and a token, through every failure path of both middlewares: each error (its message, stack,
// JSON.stringify, util.inspect and the whole cause chain), each log line (a capturing logger passed as `logger`,
// with logStats on) and each stats object (onStats) is searched for them, and neither is found.
//
// The password is the database user's (and a wrong one, for the failed logins); the token is a bearer token sent
// to the partner in the Authorization header of every request. Both contain characters that URL-encode
// differently, and their encoded forms are searched for too.
import { randomBytes } from "node:crypto";
import { inspect } from "node:util";
import middy from "@middy/core";
import { closeHttpPools, httpPool } from "@middy-conn/http-pool";
import { closeMysqlPools, mysqlConnection } from "@middy-conn/mysql";
import { invokeInProcess } from "@middy-conn/test-harness";
import {
	useHttpServer,
	usePoolCleanup,
	useTestDatabase,
	useUnreachablePeers,
} from "@middy-conn/test-harness/test-fixtures";
import { describe, expect, it } from "vitest";

const PASSWORD = `Pw/${randomBytes(6).toString("hex")}@:#!`;
const WRONG_PASSWORD = `Wrong/${randomBytes(6).toString("hex")}?&=`;
const TOKEN = `tok_${randomBytes(12).toString("base64url")}+/=`;
const SECRETS = [PASSWORD, WRONG_PASSWORD, TOKEN];

const { admin, db } = useTestDatabase("secrets", {
	tables: ["notes (id INT PRIMARY KEY)"],
	seed: (admin, db) => admin.query(`ALTER USER '${db.user}'@'%' IDENTIFIED BY ?`, [PASSWORD]),
});
const partner = useHttpServer({ tls: true, keepAliveTimeout: 60_000 });
const unreachable = useUnreachablePeers();
usePoolCleanup(closeHttpPools, closeMysqlPools);

/** Everything a scenario leaves where a secret could hide: errors, log lines, stats. */
class Record {
	readonly texts: string[] = [];
	errors = 0;
	logLines = 0;
	statsObjects = 0;

	readonly logger = Object.fromEntries(
		(["info", "warn", "error"] as const).map((level) => [
			level,
			(message: string, ...extra: unknown[]) => {
				this.logLines++;
				this.texts.push(`${level} ${message} ${inspect(extra, { depth: 10, showHidden: true })}`);
			},
		]),
	) as {
		info(m: string, ...e: unknown[]): void;
		warn(m: string, ...e: unknown[]): void;
		error(m: string, ...e: unknown[]): void;
	};

	readonly onStats = (stats: unknown) => {
		this.statsObjects++;
		this.texts.push(JSON.stringify(stats), inspect(stats, { depth: 10 }));
	};

	/** An error, everywhere its text can go: message, stack, fields, JSON, inspect, and its cause chain. */
	error(error: unknown) {
		this.errors++;
		this.texts.push(inspect(error, { depth: 10, showHidden: true }));
		let current: unknown = error;
		for (let depth = 0; current && depth < 10; depth++) {
			const record = current as { message?: unknown; stack?: unknown; cause?: unknown };
			this.texts.push(
				String(current),
				String(record.message),
				String(record.stack),
				JSON.stringify(current) ?? "",
			);
			current = record.cause;
		}
	}

	/** Runs one invocation; whatever it throws is recorded. */
	async invoke(handler: unknown, timeoutMs = 5000) {
		await invokeInProcess(handler, {}, { timeoutMs }).catch((error: unknown) => this.error(error));
	}

	/** The secrets found anywhere in what was recorded (none, if all is well). */
	leaks(): string[] {
		const all = this.texts.join("\n");
		const forms = SECRETS.flatMap((secret) => [secret, encodeURIComponent(secret)]);
		return forms.filter((form) => all.includes(form));
	}
}

const good = () => ({
	host: db.host,
	port: db.port,
	user: db.user,
	password: PASSWORD,
	database: db.database,
});

/** A handler with the MySQL middleware (logger, logStats and onStats all recording). */
const withDb = (
	record: Record,
	config: unknown,
	work: (context: import("@middy-conn/mysql").MysqlContext) => Promise<unknown>,
	extra: Partial<Parameters<typeof mysqlConnection>[0]> = {},
) =>
	middy()
		.use(
			mysqlConnection({
				config: config as never,
				logger: record.logger,
				logStats: true,
				onStats: record.onStats,
				...extra,
			}),
		)
		.handler(async (_event, context) => work(context as unknown as import("@middy-conn/mysql").MysqlContext));

/** A handler with the HTTP middleware; every request carries the bearer token. */
const withHttp = (
	record: Record,
	options: import("@middy-conn/http-pool").HttpPoolOptions,
	work: (context: import("@middy-conn/http-pool").HttpPoolContext) => Promise<unknown>,
) =>
	middy()
		.use(httpPool({ logger: record.logger, logStats: true, onStats: record.onStats, ...options }))
		.handler(async (_event, context) => work(context));

const auth = { authorization: `Bearer ${TOKEN}` };
const trusted = () => ({ origin: partner.origin, connect: { ca: partner.ca }, retry: { maxRetries: 1 } });

/** Lets the handler go on after Middy's timeout, and records what its pending work ends with. */
const andRecord = (record: Record, pending: Promise<unknown>) =>
	pending.catch((error: unknown) => record.error(error));

type Scenario = [name: string, run: (record: Record) => Promise<unknown>];

const mysqlScenarios = (mode: "scoped" | "pool"): Scenario[] => [
	[
		"a wrong password",
		(r) =>
			r.invoke(
				withDb(r, { ...good(), password: WRONG_PASSWORD }, ({ db }) => db.query("SELECT 1"), { mode }),
			),
	],
	[
		"a wrong password in a mysql:// uri",
		(r) =>
			r.invoke(
				withDb(
					r,
					{
						uri: `mysql://${db.user}:${encodeURIComponent(WRONG_PASSWORD)}@${db.host}:${db.port}/${db.database}`,
					},
					({ db }) => db.query("SELECT 1"),
					{ mode },
				),
			),
	],
	[
		"a wrong password from a config function",
		(r) =>
			r.invoke(
				withDb(
					r,
					async () => ({ ...good(), password: WRONG_PASSWORD }),
					({ db }) => db.query("SELECT 1"),
					{ mode },
				),
			),
	],
	[
		"a closed port",
		(r) =>
			r.invoke(
				withDb(r, { ...good(), port: unreachable.closedPort }, ({ db }) => db.query("SELECT 1"), { mode }),
			),
	],
	[
		"a server that never greets",
		(r) =>
			r.invoke(
				withDb(
					r,
					{ ...good(), port: unreachable.silent.port, connectTimeout: 300 },
					({ db }) => db.query("SELECT 1"),
					{
						mode,
					},
				),
			),
	],
	[
		"a certificate that is not trusted",
		(r) =>
			r.invoke(
				withDb(r, { ...good(), port: unreachable.mysqlTls.port, ssl: {} }, ({ db }) => db.query("SELECT 1"), {
					mode,
				}),
			),
	],
	[
		"a config function whose answer is invalid",
		(r) =>
			r.invoke(
				withDb(
					r,
					() => ({ ...good(), port: 70_000 }),
					({ db }) => db.query("SELECT 1"),
					{ mode },
				),
			),
	],
	[
		"a statement the server refuses",
		(r) => r.invoke(withDb(r, good(), ({ db }) => db.query("SELECT * FROM no_such_table"), { mode })),
	],
	[
		"the connection KILLed mid-query",
		(r) =>
			r.invoke(
				withDb(
					r,
					good(),
					async ({ db }) => {
						const [[row]] = (await db.query("SELECT CONNECTION_ID() AS id")) as unknown as [[{ id: number }]];
						const running = db.query("SELECT SLEEP(5)");
						setTimeout(() => void admin.kill(row.id).catch(() => {}), 100);
						await running;
					},
					{ mode },
				),
			),
	],
	[
		"Middy's timeout during a query",
		(r) => {
			let pending: Promise<unknown> = Promise.resolve();
			return r
				.invoke(
					withDb(
						r,
						good(),
						async ({ db }) => {
							pending = andRecord(r, db.query("SELECT SLEEP(1)"));
							await pending;
						},
						{ mode },
					),
					300,
				)
				.then(() => pending);
		},
	],
	[
		"the handler throws inside the transaction",
		(r) =>
			r.invoke(
				withDb(
					r,
					good(),
					async ({ db }) => {
						await db.query("INSERT INTO notes (id) VALUES (1)");
						throw new Error("the handler failed");
					},
					{ mode, transaction: true },
				),
			),
	],
	[
		"COMMIT on a connection that died",
		(r) =>
			r.invoke(
				withDb(
					r,
					good(),
					async ({ db }) => {
						const [[row]] = (await db.query("SELECT CONNECTION_ID() AS id")) as unknown as [[{ id: number }]];
						await admin.kill(row.id);
						await new Promise((resolve) => setTimeout(resolve, 100));
					},
					{ mode, transaction: true },
				),
			),
	],
	[
		"an after that throws, and an onError that throws",
		async (r) => {
			const handler = withDb(r, good(), ({ db }) => db.query("SELECT 1"), { mode })
				.use({ onError: () => Promise.reject(new Error("an onError failed")) })
				.use({
					after: () => {
						throw new Error("an after failed");
					},
				});
			await r.invoke(handler);
		},
	],
	[
		"an early response after the connection was used",
		(r) =>
			r.invoke(
				withDb(r, good(), async () => "unreached", { mode }).use({
					before: async (request) => {
						await (request.context as unknown as { db: { query(sql: string): Promise<unknown> } }).db.query(
							"SELECT 1",
						);
						return "early";
					},
				}),
			),
	],
	[
		"context.db used after its invocation ended",
		async (r) => {
			let leaked: { query(sql: string): Promise<unknown> } | undefined;
			await r.invoke(
				withDb(
					r,
					good(),
					async ({ db }) => {
						leaked = db;
					},
					{ mode },
				),
			);
			await leaked?.query("SELECT 1").catch((error: unknown) => r.error(error));
		},
	],
];

const httpScenarios: Scenario[] = [
	[
		"a closed port (GET, then a POST that is never sent)",
		async (r) => {
			const origin = `https://127.0.0.1:${unreachable.closedPort}`;
			await r.invoke(
				withHttp(r, { origin }, (c) => c.http.request({ path: "/json", method: "GET", headers: auth })),
			);
			await r.invoke(
				withHttp(r, { origin }, (c) =>
					c.http.request({ path: "/json", method: "POST", headers: auth, body: "{}" }),
				),
			);
		},
	],
	[
		"a reset after the POST was sent",
		(r) =>
			r.invoke(
				withHttp(r, trusted(), (c) =>
					c.http.request({ path: "/reset", method: "POST", headers: auth, body: "{}" }),
				),
			),
	],
	[
		"a server that never answers (headers timeout)",
		(r) =>
			r.invoke(
				withHttp(r, { ...trusted(), headersTimeout: 300 }, (c) =>
					c.http.request({ path: "/hang", method: "GET", headers: auth }),
				),
			),
	],
	[
		"a body slower than bodyTimeout",
		(r) =>
			r.invoke(
				withHttp(r, { ...trusted(), bodyTimeout: 300 }, async (c) => {
					const { body } = await c.http.request({ path: "/slow-body?ms=2000", method: "GET", headers: auth });
					return body.text();
				}),
			),
	],
	[
		"a certificate that is not trusted",
		(r) =>
			r.invoke(
				withHttp(r, { origin: partner.origin }, (c) =>
					c.http.request({ path: "/json", method: "GET", headers: auth }),
				),
			),
	],
	[
		"a server that never completes the TLS handshake",
		(r) =>
			r.invoke(
				withHttp(r, { origin: `https://127.0.0.1:${unreachable.silent.port}`, connectTimeout: 300 }, (c) =>
					c.http.request({ path: "/json", method: "GET", headers: auth }),
				),
			),
	],
	[
		"Middy's timeout during a request",
		async (r) => {
			let pending: Promise<unknown> = Promise.resolve();
			await r.invoke(
				withHttp(r, trusted(), async (c) => {
					pending = andRecord(r, c.http.request({ path: "/hang", method: "GET", headers: auth }));
					await pending;
				}),
				300,
			);
			await pending;
		},
	],
	[
		"background tasks that fail, and one still running at the deadline",
		(r) =>
			r.invoke(
				withHttp(r, { ...trusted(), waitUntilTimeout: 300 }, async (c) => {
					c.waitUntil(c.http.request({ path: "/reset", method: "POST", headers: auth, body: "{}" }));
					c.waitUntil(async (signal) => {
						const { statusCode, body } = await c.http.request({
							path: "/status/503",
							method: "GET",
							headers: auth,
							signal,
						});
						await body.dump();
						throw new Error(`the partner answered ${statusCode}`);
					});
					c.waitUntil(c.http.request({ path: "/hang", method: "GET", headers: auth }));
					return "ok";
				}),
			),
	],
	[
		"requests left open at the end of the invocation",
		(r) =>
			r.invoke(
				withHttp(r, trusted(), async (c) => {
					void andRecord(r, c.http.request({ path: "/hang", method: "GET", headers: auth }));
					await c.http.request({ path: "/large?bytes=2000000", method: "GET", headers: auth });
					return "ok";
				}),
			),
	],
	[
		"a request for another origin",
		(r) =>
			r.invoke(
				withHttp(r, trusted(), (c) =>
					c.http.request({ origin: "https://elsewhere.example", path: "/", method: "GET", headers: auth }),
				),
			),
	],
	[
		"a request sent after its invocation ended",
		async (r) => {
			let leaked: import("@middy-conn/http-pool").HttpPoolContext | undefined;
			await r.invoke(
				withHttp(r, trusted(), async (c) => {
					leaked = c;
				}),
			);
			await leaked?.http
				.request({ path: "/json", method: "GET", headers: auth })
				.catch((error: unknown) => r.error(error));
		},
	],
	[
		"an onError that throws while a request is open",
		(r) =>
			r.invoke(
				withHttp(r, trusted(), async (c) => {
					void andRecord(r, c.http.request({ path: "/hang", method: "GET", headers: auth }));
					throw new Error("the handler failed");
				}).use({ onError: () => Promise.reject(new Error("an onError failed")) }),
			),
	],
];

describe.each(["scoped", "pool"] as const)(
	"mysqlConnection(), mode %s: the password appears nowhere",
	(mode) => {
		it.each(mysqlScenarios(mode))("%s", async (_name, run) => {
			const record = new Record();
			await run(record);
			expect(record.errors + record.logLines + record.statsObjects).toBeGreaterThan(0);
			expect(record.leaks()).toEqual([]);
		});
	},
);

describe("httpPool(): the bearer token appears nowhere", () => {
	it.each(httpScenarios)("%s", async (_name, run) => {
		const record = new Record();
		await run(record);
		expect(record.errors + record.logLines).toBeGreaterThan(0);
		expect(record.leaks()).toEqual([]);
	});
});

// A credential in a URL (an API key parameter, a presigned URL's signature) is part of the request's path.
const API_KEY = `key_${randomBytes(9).toString("hex")}`;
const withKey = `/json?api_key=${API_KEY}`;

describe("httpPool(): a credential in the query string", () => {
	const record = async (scenario: (r: Record) => Promise<unknown>) => {
		const r = new Record();
		await scenario(r);
		return r.texts.join("\n");
	};

	it("does not appear in the error of an idempotent request that failed on the network (undici's own)", async () => {
		const texts = await record((r) =>
			r.invoke(
				withHttp(r, { origin: `https://127.0.0.1:${unreachable.closedPort}` }, (c) =>
					c.http.request({ path: withKey, method: "GET" }),
				),
			),
		);
		expect(texts).not.toContain(API_KEY);
	});

	// http-pool names a non-idempotent request that failed on the network by its method, origin and path, without
	// the query string (MIDDY_CONN_HTTP_REQUEST_NOT_SENT and MIDDY_CONN_HTTP_REQUEST_MAY_HAVE_BEEN_SENT reach log lines).
	it.each([
		["never sent (a closed port)", () => `https://127.0.0.1:${unreachable.closedPort}`, withKey],
		["maybe sent (reset before any response)", () => partner.origin, `/reset?api_key=${API_KEY}`],
	])("does not appear in the error of a POST %s", async (_case, origin, path) => {
		const texts = await record((r) =>
			r.invoke(
				withHttp(r, { origin: origin(), connect: { ca: partner.ca } }, (c) =>
					c.http.request({ path, method: "POST", body: "{}" }),
				),
			),
		);
		expect(texts).not.toContain(API_KEY);
	});

	it("does not appear in the errors of requests cut off at the end of the invocation, or sent after it", async () => {
		const texts = await record(async (r) => {
			let leaked: import("@middy-conn/http-pool").HttpPoolContext | undefined;
			await r.invoke(
				withHttp(r, trusted(), async (c) => {
					leaked = c;
					void andRecord(r, c.http.request({ path: `/hang?api_key=${API_KEY}`, method: "GET" }));
					return "ok";
				}),
			);
			await leaked?.http.request({ path: withKey, method: "GET" }).catch((error: unknown) => r.error(error));
		});
		expect(texts).not.toContain(API_KEY);
	});
});

describe("what was searched", () => {
	it("covers errors, log lines and stats objects", async () => {
		const record = new Record();
		for (const [, run] of [...mysqlScenarios("scoped"), ...httpScenarios]) await run(record);
		expect(record.errors).toBeGreaterThan(20);
		expect(record.logLines).toBeGreaterThan(20);
		expect(record.statsObjects).toBeGreaterThan(20);
		expect(record.leaks()).toEqual([]);
	});
});
