// Response streaming (Middy's executionModeStreamifyResponse): Middy runs the `after`s before the body is written,
// and the invocation lasts until the body has ended. A body that still reads from context.db (a query stream, rows
// fetched while writing) keeps its connection until its last byte: the connection is closed (scoped) or released
// (pool) when the body ends, commits then with the transaction option, rolls back when the body fails, and is
// given up when the body is destroyed while its query still runs. Checked against what the server counts and
// what the client of the Lambda runtime receives (the runtime stand-in of the test harness).
import { createHash } from "node:crypto";
import { pipeline, Readable, Transform } from "node:stream";
import { createGzip, gunzipSync } from "node:zlib";
import middy from "@middy/core";
import { executionModeStreamifyResponse } from "@middy/core/executionModeStreamifyResponse";
import { closeHttpPools, type HttpPoolStats, httpPool } from "@middy-conn/http-pool";
import {
	installLambdaStreaming,
	invokeStreaming,
	patternBytes,
	startTcpProxy,
} from "@middy-conn/test-harness";
import { useHttpServer, usePoolCleanup, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { Connection as CoreConnection, RowDataPacket } from "mysql2";
import type { Connection } from "mysql2/promise";
import { describe, expect, it } from "vitest";
import {
	closeMysqlPools,
	type InvocationDb,
	type MysqlConnectionOptions,
	type MysqlConnectionStats,
	mysqlConnection,
} from "../src/index.ts";
import { configOf, inMode, invoke, recordingLogger } from "./helpers.ts";

// Middy reads the `awslambda` global when a streaming handler is created.
installLambdaStreaming();

const ROWS = 5000;
const payloadOf = (id: number) => `payload-${String(id).padStart(5, "0")}-${"x".repeat(30)}`;
/** The body a client should receive for every row of `t`, in id order: one JSON line per row. */
const expectedNdjson = Array.from(
	{ length: ROWS },
	(_, i) => `${JSON.stringify({ id: i + 1, payload: payloadOf(i + 1) })}\n`,
).join("");

const { admin, db } = useTestDatabase("mysql_streaming", {
	tables: [
		"t (id INT PRIMARY KEY, payload VARCHAR(64) NOT NULL)",
		"log (id INT AUTO_INCREMENT PRIMARY KEY, chunk INT NOT NULL)",
	],
	seed: (admin, db) =>
		admin.query(`INSERT INTO \`${db.database}\`.t (id, payload) VALUES ?`, [
			Array.from({ length: ROWS }, (_, i) => [i + 1, payloadOf(i + 1)]),
		]),
	clear: ["log"],
	settle: "wait",
});
usePoolCleanup(closeMysqlPools);

/** The core (callback) connection behind context.db.connection(): the one with query(...).stream(). */
const coreOf = (connection: Connection) =>
	(connection as unknown as { connection: CoreConnection }).connection;

/** Rows in, NDJSON lines out; `destroyAfter` rows, it destroys itself (a body that ends early). */
const ndjson = (destroyAfter = Number.POSITIVE_INFINITY) => {
	let rows = 0;
	return new Transform({
		writableObjectMode: true,
		transform(row, _encoding, callback) {
			if (++rows > destroyAfter) {
				this.destroy();
				return;
			}
			callback(null, `${JSON.stringify(row)}\n`);
		},
	});
};

/** Every row of `t`, streamed from the invocation's connection as NDJSON. */
const queryStreamBody = async (db: InvocationDb, timeline: string[], destroyAfter?: number) => {
	const connection = await db.connection();
	const body = coreOf(connection)
		.query("SELECT id, payload FROM t ORDER BY id")
		.stream()
		.pipe(ndjson(destroyAfter));
	body.on("end", () => timeline.push("body:end"));
	return body;
};

const committedChunks = async () =>
	(await admin.query<RowDataPacket[]>(`SELECT chunk FROM \`${db.database}\`.log ORDER BY id`)).map(
		(row) => row.chunk as number,
	);

const streaming = () => middy({ executionMode: executionModeStreamifyResponse });

const modes = ["scoped", "pool"] as const;

describe.each(modes)("mode %s: a streamed response keeps its connection until the body ends", (mode) => {
	// Pool mode keeps one warm connection (connectionLimit 1); scoped mode keeps none.
	const warm = mode === "pool" ? 1 : 0;
	const closedGracefully = mode === "pool" ? "released" : "ended";

	const setup = (extra: Partial<MysqlConnectionOptions> = {}) => {
		const timeline: string[] = [];
		const stats: MysqlConnectionStats[] = [];
		const { lines, logger } = recordingLogger();
		const middleware = mysqlConnection({
			...inMode(db, mode),
			logger,
			onStats: (s) => {
				stats.push(s);
				timeline.push(`mysql:${s.closed}`);
			},
			...extra,
		});
		const problems = () => lines.filter((line) => line.level !== "info");
		return { timeline, stats, middleware, problems };
	};

	/** The order of a body that ended: its last byte, the connection closed, the response stream ended, the return. */
	const closedAfterTheBody = [
		"body:end",
		`mysql:${closedGracefully}`,
		"response:finished",
		"handler:resolved",
	];
	/** The server settles back to the mode's warm connections: nothing the invocation opened is left behind. */
	const expectBackToWarm = async () => {
		expect(await admin.settleConnections(db.user, warm)).toBe(warm);
	};

	it("delivers every row of a query stream piped through NDJSON, and closes the connection after its last byte", async () => {
		const { timeline, stats, middleware, problems } = setup();
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => ({
				statusCode: 200,
				headers: { "content-type": "application/x-ndjson" },
				body: await queryStreamBody(context.db, timeline),
			}));

		const result = await invokeStreaming(handler, {}, {}, { timeline, writeDelayMs: 0 });

		expect(result.settled.status).toBe("fulfilled");
		expect(result.prelude).toEqual({ statusCode: 200, headers: { "content-type": "application/x-ndjson" } });
		expect(result.body.length).toBeGreaterThan(200 * 1024);
		expect(result.body.toString("utf8")).toBe(expectedNdjson);
		expect(result.flow.drains).toBeGreaterThan(0);
		// the body ended, then the connection closed, then the response stream ended, then the invocation returned
		expect(timeline).toEqual(closedAfterTheBody);
		expect(stats).toHaveLength(1);
		expect(stats[0]).toMatchObject({ connected: true, closed: closedGracefully, transaction: "none" });
		expect(problems()).toEqual([]);
		await expectBackToWarm();
	});

	it("delivers a body that fetches its rows page by page with context.db.query while it is written", async () => {
		const { timeline, stats, middleware, problems } = setup();
		const pageSize = 500;
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => {
				async function* pages() {
					for (let offset = 0; offset <= ROWS; offset += pageSize) {
						const [rows] = await context.db.query<RowDataPacket[]>(
							"SELECT id, payload FROM t ORDER BY id LIMIT ? OFFSET ?",
							[pageSize, offset],
						);
						if (rows.length === 0) break;
						yield rows.map((row) => `${JSON.stringify({ id: row.id, payload: row.payload })}\n`).join("");
					}
					timeline.push("body:end");
				}
				return Readable.from(pages());
			});

		const result = await invokeStreaming(handler, {}, {}, { timeline, writeDelayMs: 0 });

		expect(result.settled.status).toBe("fulfilled");
		// a bare stream (InvokeWithResponseStream): no HTTP prelude
		expect(result.prelude).toBeUndefined();
		expect(result.body.toString("utf8")).toBe(expectedNdjson);
		expect(timeline).toEqual(closedAfterTheBody);
		expect(stats[0]).toMatchObject({ queries: ROWS / pageSize + 1, closed: closedGracefully });
		expect(problems()).toEqual([]);
		await expectBackToWarm();
	});

	it("commits what the body wrote only once the body has ended (transaction: true)", async () => {
		const { timeline, stats, middleware } = setup({ transaction: true });
		const seenDuringBody: number[][] = [];
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => {
				async function* chunks() {
					for (let chunk = 0; chunk < 5; chunk++) {
						await context.db.query("INSERT INTO log (chunk) VALUES (?)", [chunk]);
						seenDuringBody.push(await committedChunks());
						yield `chunk ${chunk}\n`;
					}
					timeline.push("body:end");
				}
				return { statusCode: 200, body: Readable.from(chunks()) };
			});

		const result = await invokeStreaming(handler, {}, {}, { timeline });

		expect(result.settled.status).toBe("fulfilled");
		expect(result.body.toString()).toBe("chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
		// nothing was visible to another session while the body was being written
		expect(seenDuringBody).toEqual([[], [], [], [], []]);
		expect(await committedChunks()).toEqual([0, 1, 2, 3, 4]);
		expect(stats[0]).toMatchObject({ transaction: "committed", closed: closedGracefully });
		expect(timeline).toEqual(closedAfterTheBody);
		await expectBackToWarm();
	});

	it("rolls back what the body wrote when the body fails midway, and the invocation fails with its error", async () => {
		const { timeline, stats, middleware } = setup({ transaction: true });
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => {
				async function* chunks() {
					for (let chunk = 0; chunk < 3; chunk++) {
						await context.db.query("INSERT INTO log (chunk) VALUES (?)", [chunk]);
						yield `chunk ${chunk}\n`;
					}
					throw new Error("the source failed midway");
				}
				return { statusCode: 200, body: Readable.from(chunks()) };
			});

		const result = await invokeStreaming(handler, {}, {}, { timeline });

		expect(result.settled).toMatchObject({
			status: "rejected",
			reason: { message: "the source failed midway" },
		});
		expect(await committedChunks()).toEqual([]);
		expect(stats).toHaveLength(1);
		expect(stats[0]).toMatchObject({ transaction: "rolled-back", closed: closedGracefully });
		// the rollback was over before the invocation failed
		expect(timeline.indexOf(`mysql:${closedGracefully}`)).toBeLessThan(timeline.indexOf("handler:rejected"));
		await expectBackToWarm();
	});

	it("gives up the connection (and its running query) when the body is destroyed before its end", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => ({
				statusCode: 200,
				body: await queryStreamBody(context.db, timeline, 100),
			}));

		const result = await invokeStreaming(handler, {}, {}, { timeline });

		expect(result.settled).toMatchObject({
			status: "rejected",
			reason: { code: "ERR_STREAM_PREMATURE_CLOSE" },
		});
		expect(result.body.toString().split("\n")).toHaveLength(101);
		// the query was still sending rows: the connection could not be reused, and its session was killed
		expect(stats).toHaveLength(1);
		expect(stats[0]?.closed).toBe("destroyed");
		expect(timeline.indexOf("mysql:destroyed")).toBeLessThan(timeline.indexOf("handler:rejected"));
		expect(await admin.settleConnections(db.user, 0)).toBe(0);

		// and the next invocation is served (pool mode: by a new connection, which stays warm)
		const next = streaming()
			.use(middleware)
			.handler(async (_event, context) => {
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM t");
				return { statusCode: 200, body: String(rows[0]?.n) };
			});
		expect((await invokeStreaming(next)).body.toString()).toBe(String(ROWS));
		await expectBackToWarm();
	});

	it("fails the body with the connection's error when the connection is lost while a query stream reads it", async () => {
		// A DB server that crashes, or a network path reset, mid-result. mysql2 tells only a command with a callback
		// that its connection is lost: a query stream would neither end nor fail, and the body would hang until
		// Lambda's timeout.
		const proxy = await startTcpProxy(db);
		try {
			const { timeline, stats, middleware } = setup({
				config: { ...configOf(db), host: proxy.host, port: proxy.port },
			});
			const handler = streaming()
				.use(middleware)
				.handler(async (_event, context) => {
					const connection = await context.db.connection();
					const rows = coreOf(connection)
						.query(
							"SELECT id, REPEAT('x', 40000) AS padding, SLEEP(0.05) AS pause FROM t WHERE id <= 40 ORDER BY id",
						)
						.stream();
					rows.once("data", () => proxy.resetAll());
					// pipeline, not pipe: a source's error must reach the body
					return { statusCode: 200, body: pipeline(rows, ndjson(), () => {}) };
				});

			const result = await invokeStreaming(handler, {}, {}, { timeline });

			expect(result.settled).toMatchObject({ status: "rejected", reason: { code: "ECONNRESET" } });
			expect(result.finished).toBe(false);
			expect(stats).toHaveLength(1);
			expect(stats[0]?.closed).toBe("destroyed");
			expect(await admin.settleConnections(db.user, 0)).toBe(0);
		} finally {
			await proxy.close();
		}
	});

	it("closes the connection normally when a body is destroyed early with no statement in flight (back to warm)", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => {
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT id, payload FROM t ORDER BY id");
				const body = Readable.from(rows).pipe(ndjson(100));
				return { statusCode: 200, body };
			});

		const result = await invokeStreaming(handler, {}, {}, { timeline });

		expect(result.settled).toMatchObject({
			status: "rejected",
			reason: { code: "ERR_STREAM_PREMATURE_CLOSE" },
		});
		expect(stats).toHaveLength(1);
		expect(stats[0]?.closed).toBe(closedGracefully);
		expect(timeline.indexOf(`mysql:${closedGracefully}`)).toBeLessThan(timeline.indexOf("handler:rejected"));
		await expectBackToWarm();
	});

	it("gives up the connection when the response stream fails midway (a write error), and the invocation fails", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => ({
				statusCode: 200,
				body: await queryStreamBody(context.db, timeline),
			}));

		const result = await invokeStreaming(handler, {}, {}, { timeline, failAfterBytes: 16 * 1024 });

		expect(result.settled).toMatchObject({ status: "rejected", reason: { code: "EPIPE" } });
		expect(result.streamError).toMatchObject({ code: "EPIPE" });
		expect(stats).toHaveLength(1);
		expect(stats[0]?.closed).toBe("destroyed");
		expect(timeline.indexOf("mysql:destroyed")).toBeLessThan(timeline.indexOf("handler:rejected"));
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});

	it("reads the body to its end and closes normally when the client goes away (not an error on Lambda)", async () => {
		const { timeline, stats, middleware } = setup({ transaction: true });
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => {
				await context.db.query("INSERT INTO log (chunk) VALUES (7)");
				return { statusCode: 200, body: await queryStreamBody(context.db, timeline) };
			});

		const result = await invokeStreaming(handler, {}, {}, { timeline, disconnectAfterBytes: 4096 });

		expect(result.settled.status).toBe("fulfilled");
		expect(result.clientGone).toBe(true);
		expect(stats[0]).toMatchObject({ transaction: "committed", closed: closedGracefully });
		expect(await committedChunks()).toEqual([7]);
		expect(timeline).toEqual(closedAfterTheBody);
		await expectBackToWarm();
	});

	it("fails the response stream and the invocation when the COMMIT at the end of the body cannot happen", async () => {
		const { timeline, stats, middleware } = setup({ transaction: true });
		const handler = streaming()
			.use(middleware)
			.handler(async (_event, context) => {
				const [[session]] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
				async function* chunks() {
					await context.db.query("INSERT INTO log (chunk) VALUES (1)");
					yield "chunk 1\n";
					// the session is killed (a failover, an operator) before the body ends: nothing can be committed
					await admin.kill(Number(session?.id));
					yield "chunk 2\n";
				}
				return { statusCode: 200, body: Readable.from(chunks()) };
			});

		const result = await invokeStreaming(handler, {}, {}, { timeline });

		expect(result.settled).toMatchObject({
			status: "rejected",
			reason: { message: expect.stringMatching(/^COMMIT of the invocation's transaction/) },
		});
		expect(result.finished).toBe(false);
		expect(await committedChunks()).toEqual([]);
		expect(stats[0]).toMatchObject({ transaction: "rolled-back", closed: "destroyed" });
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});

	it("keeps the connection for the body of an early response that a later before returns", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = streaming()
			.use(middleware)
			.use({
				// a cache-like middleware: answers from the database, and Middy skips the handler and every after
				before: async (request) => {
					const context = request.context as unknown as { db: InvocationDb };
					return { statusCode: 200, body: await queryStreamBody(context.db, timeline) };
				},
			})
			.handler(async () => ({ statusCode: 500, body: "the handler never runs" }));

		const result = await invokeStreaming(handler, {}, {}, { timeline, writeDelayMs: 0 });

		expect(result.settled.status).toBe("fulfilled");
		expect(result.prelude).toEqual({ statusCode: 200 });
		expect(result.body.toString("utf8")).toBe(expectedNdjson);
		expect(stats[0]?.closed).toBe(closedGracefully);
		expect(timeline).toEqual(closedAfterTheBody);
		await expectBackToWarm();
	});

	it("commits a streamed early response when its body has ended, as on any early response (transaction: true)", async () => {
		const { timeline, stats, middleware } = setup({ transaction: true });
		const handler = streaming()
			.use(middleware)
			.use({
				before: async (request) => {
					const context = request.context as unknown as { db: InvocationDb };
					await context.db.query("INSERT INTO log (chunk) VALUES (1)");
					return { statusCode: 409, body: await queryStreamBody(context.db, timeline) };
				},
			})
			.handler(async () => ({ statusCode: 200, body: "the handler never runs" }));

		const result = await invokeStreaming(handler, {}, {}, { timeline });

		expect(result.settled.status).toBe("fulfilled");
		expect(result.body.toString("utf8")).toBe(expectedNdjson);
		// the same outcome as the early response of a buffered invocation (transaction.test.ts)
		expect(await committedChunks()).toEqual([1]);
		expect(stats[0]).toMatchObject({ transaction: "committed", closed: closedGracefully });
		await expectBackToWarm();
	});

	it("keeps the connection for a body that an outer after wraps (gzip), until the wrapped body ends", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = streaming()
			.use({
				// registered first, so its after runs last: it wraps the body our after already guarded
				after: (request) => {
					const response = request.response as { headers?: Record<string, string>; body: Readable };
					const gzip = createGzip();
					pipeline(response.body, gzip, () => {});
					response.headers = { ...response.headers, "content-encoding": "gzip" };
					response.body = gzip;
				},
			})
			.use(middleware)
			.handler(async (_event, context) => ({
				statusCode: 200,
				body: await queryStreamBody(context.db, timeline),
			}));

		const result = await invokeStreaming(handler, {}, {}, { timeline });

		expect(result.settled.status).toBe("fulfilled");
		expect(result.prelude).toEqual({ statusCode: 200, headers: { "content-encoding": "gzip" } });
		expect(gunzipSync(result.body).toString("utf8")).toBe(expectedNdjson);
		expect(stats[0]?.closed).toBe(closedGracefully);
		expect(timeline).toEqual(closedAfterTheBody);
		await expectBackToWarm();
	});

	it("still closes the connection before the invocation returns when an outer after replaces the streamed response", async () => {
		const { timeline, stats, middleware } = setup();
		let dropped: Readable | undefined;
		const handler = streaming()
			.use({
				// registered first, so its after runs last: the body our after guarded is never read
				after: (request) => {
					request.response = { statusCode: 304, body: "" };
				},
			})
			.use(middleware)
			.handler(async (_event, context) => {
				dropped = await queryStreamBody(context.db, timeline);
				return { statusCode: 200, body: dropped };
			});

		try {
			const result = await invokeStreaming(handler, {}, {}, { timeline });

			expect(result.settled.status).toBe("fulfilled");
			expect(result.prelude).toEqual({ statusCode: 304 });
			// nothing of the invocation may outlive it: the dropped body's connection is closed (or given up) first
			expect(stats).toHaveLength(1);
			expect(stats[0]?.closed).not.toBe("none");
			expect(timeline.indexOf("handler:resolved")).toBeGreaterThan(
				timeline.findIndex((m) => m.startsWith("mysql:")),
			);
		} finally {
			// whatever the outcome, let the dropped body's teardown free the connection for the tests that follow
			// (its query is still running: the connection is given up, in both modes)
			dropped?.destroy();
			await admin.settleConnections(db.user, 0);
		}
	});

	it("closes in its after when a streaming response has a string body: nothing to wait for", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = streaming()
			.use({ after: () => void timeline.push("outer after") })
			.use(middleware)
			.handler(async (_event, context) => {
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM t");
				return { statusCode: 200, body: `${rows[0]?.n} rows` };
			});

		const result = await invokeStreaming(handler, {}, {}, { timeline });

		expect(result.body.toString()).toBe(`${ROWS} rows`);
		expect(stats[0]?.closed).toBe(closedGracefully);
		expect(timeline).toEqual([
			`mysql:${closedGracefully}`,
			"outer after",
			"response:finished",
			"handler:resolved",
		]);
		await expectBackToWarm();
	});

	it("standard mode: a { statusCode, body: string } response is closed in the after, as before", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = middy()
			.use({ after: () => void timeline.push("outer after") })
			.use(middleware)
			.handler(async (_event, context) => {
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM t");
				return { statusCode: 200, body: `${rows[0]?.n} rows` };
			});

		const response = await invoke<{ statusCode: number; body: string }>(handler);
		timeline.push("handler:resolved");

		expect(response).toEqual({ statusCode: 200, body: `${ROWS} rows` });
		expect(stats[0]?.closed).toBe(closedGracefully);
		expect(timeline).toEqual([`mysql:${closedGracefully}`, "outer after", "handler:resolved"]);
		await expectBackToWarm();
	});
});

describe("mysqlConnection and httpPool in one streaming function", () => {
	const server = useHttpServer({ resetStats: false });
	usePoolCleanup(closeHttpPools);
	const partnerBytes = 4 * 1024 * 1024 + 5;
	const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

	it.each(modes)(
		"mode %s: streams the rows then the partner's body, every byte, and closes both after the body",
		async (mode) => {
			const timeline: string[] = [];
			const mysqlStats: MysqlConnectionStats[] = [];
			const httpStats: HttpPoolStats[] = [];
			const { lines, logger } = recordingLogger();
			const handler = streaming()
				.use(
					httpPool({
						origin: server.origin,
						logger,
						onStats: (s) => {
							httpStats.push(s);
							timeline.push("http:closed");
						},
					}),
				)
				.use(
					mysqlConnection({
						...inMode(db, mode),
						logger,
						onStats: (s) => {
							mysqlStats.push(s);
							timeline.push(`mysql:${s.closed}`);
						},
					}),
				)
				.handler(async (_event, context) => {
					const connection = await context.db.connection();
					const rows = coreOf(connection).query("SELECT id, payload FROM t ORDER BY id").stream();
					const partner = await context.http.request({
						path: `/pattern?bytes=${partnerBytes}`,
						method: "GET",
					});
					async function* body() {
						for await (const row of rows) yield `${JSON.stringify(row)}\n`;
						for await (const chunk of partner.body) yield chunk as Buffer;
						timeline.push("body:end");
					}
					return {
						statusCode: 200,
						headers: { "content-type": "application/octet-stream" },
						body: Readable.from(body()),
					};
				});

			const result = await invokeStreaming(handler, {}, {}, { timeline, writeDelayMs: 0 });

			expect(result.settled.status).toBe("fulfilled");
			const expected = Buffer.concat([Buffer.from(expectedNdjson), patternBytes(0, partnerBytes)]);
			expect(result.body.length).toBe(expected.length);
			expect(sha256(result.body)).toBe(sha256(expected));
			const closed = mode === "pool" ? "released" : "ended";
			// both closed after the body's last byte, newest first, before the invocation returned
			expect(timeline).toEqual([
				"body:end",
				`mysql:${closed}`,
				"http:closed",
				"response:finished",
				"handler:resolved",
			]);
			expect(mysqlStats[0]?.closed).toBe(closed);
			expect(httpStats[0]).toMatchObject({ requests: 1, leftovers: { dumped: 0, aborted: 0 } });
			expect(lines.filter((line) => line.level !== "info")).toEqual([]);
			expect(await admin.settleConnections(db.user, mode === "pool" ? 1 : 0)).toBe(mode === "pool" ? 1 : 0);
		},
	);
});
