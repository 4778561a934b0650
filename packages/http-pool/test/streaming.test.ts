// Response streaming (Middy's executionModeStreamifyResponse): Middy runs the `after`s before the body is written,
// and the invocation lasts until the body has ended. A partner's body proxied through context.http keeps its
// request open until its last byte: nothing is aborted under it (no MIDDY_CONN_HTTP_INVOCATION_ENDED), its socket goes
// back to the warm pool, the background tasks are awaited after the body, and a body that fails (the partner's, or
// the response stream to the runtime) still tears the invocation down with no socket left open.
import { createHash } from "node:crypto";
import { once } from "node:events";
import { Readable } from "node:stream";
import { setImmediate } from "node:timers/promises";
import middy from "@middy/core";
import { executionModeStreamifyResponse } from "@middy/core/executionModeStreamifyResponse";
import {
	installLambdaStreaming,
	invokeStreaming,
	patternBytes,
	type StreamingInvokeOptions,
} from "@middy-conn/test-harness";
import { eventually, useHttpServer, usePoolCleanup } from "@middy-conn/test-harness/test-fixtures";
import { fetch } from "undici";
import { describe, expect, it } from "vitest";
import {
	closeHttpPools,
	type HttpPoolMiddleware,
	type HttpPoolOptions,
	type HttpPoolStats,
	httpPool,
} from "../src/index.ts";
import {
	auditRoute,
	type HttpContext,
	lambdaContext,
	spyLogger,
	watchUnhandledRejections,
} from "./helpers.ts";

// Middy reads the `awslambda` global when a streaming handler is created.
installLambdaStreaming();

const server = useHttpServer({ routes: auditRoute(0) });
usePoolCleanup(closeHttpPools);

const MiB = 1024 * 1024;
const partnerBytes = 6 * MiB + 3;
const sha256 = (bytes: Buffer | Uint8Array) => createHash("sha256").update(bytes).digest("hex");

const setup = (options: HttpPoolOptions = {}) => {
	const timeline: string[] = [];
	const stats: HttpPoolStats[] = [];
	const logger = spyLogger();
	const middleware = httpPool({
		origin: server.origin,
		logger,
		onStats: (s) => {
			stats.push(s);
			timeline.push("http:closed");
		},
		...options,
	});
	/** The sockets the shared pool holds open right now (undici Pool stats). */
	const connected = () =>
		(middleware.dispatcher as unknown as { stats: { connected: number } }).stats.connected;
	return { timeline, stats, logger, middleware, connected };
};

/** Invokes like the Lambda runtime: the next invocation comes at least one turn of the event loop later. */
const invoke = async (handler: unknown, options: StreamingInvokeOptions = {}) => {
	try {
		return await invokeStreaming(handler, {}, lambdaContext(10_000), options);
	} finally {
		await setImmediate();
	}
};

const streaming = () => middy({ executionMode: executionModeStreamifyResponse });

/** A handler that proxies the partner's `path` as its own body. */
const proxy = (middleware: HttpPoolMiddleware, path: string, timeline: string[]) =>
	streaming()
		.use(middleware)
		.handler(async (_event: unknown, context: HttpContext) => {
			const { statusCode, headers, body } = await context.http.request({ path, method: "GET" });
			body.on("end", () => timeline.push("body:end"));
			return { statusCode, headers: { "content-type": headers["content-type"] }, body };
		});

describe("a streamed response proxies a partner's body through context.http", () => {
	it("delivers every byte of a body of several MiB, aborts nothing, and the socket goes back to the pool", async () => {
		const { timeline, stats, logger, middleware } = setup();
		const handler = proxy(middleware, `/pattern?bytes=${partnerBytes}`, timeline);

		const first = await invoke(handler, { timeline, writeDelayMs: 0 });

		expect(first.settled.status).toBe("fulfilled");
		expect(first.prelude).toEqual({
			statusCode: 200,
			headers: { "content-type": "application/octet-stream" },
		});
		expect(first.body.length).toBe(partnerBytes);
		expect(sha256(first.body)).toBe(sha256(patternBytes(0, partnerBytes)));
		// the slow client made the body wait for it (backpressure), and nothing was aborted meanwhile
		expect(first.flow.drains).toBeGreaterThan(0);
		expect(timeline).toEqual(["body:end", "http:closed", "response:finished", "handler:resolved"]);
		expect(stats[0]).toMatchObject({
			requests: 1,
			connectionsOpened: 1,
			leftovers: { dumped: 0, aborted: 0 },
		});
		expect(logger.warn).not.toHaveBeenCalled();
		expect(logger.error).not.toHaveBeenCalled();

		const second = await invoke(handler);

		expect(sha256(second.body)).toBe(sha256(patternBytes(0, partnerBytes)));
		expect(stats[1]).toMatchObject({ requests: 1, connectionsOpened: 0, connectionsReused: 1 });
		expect(server.stats.connections).toBe(1);
		expect(new Set(server.received.map((received) => received.socketId)).size).toBe(1);
	});

	it("delivers a web ReadableStream body (fetch with context.http as its dispatcher) and reuses the socket", async () => {
		const { timeline, stats, logger, middleware } = setup();
		const handler = streaming()
			.use(middleware)
			.handler(async (_event: unknown, context: HttpContext) => {
				const response = await fetch(`${server.origin}/pattern?bytes=${partnerBytes}`, {
					dispatcher: context.http,
				});
				return { statusCode: response.status, body: response.body };
			});

		const first = await invoke(handler, { timeline, writeDelayMs: 0 });
		const second = await invoke(handler);

		expect(first.settled.status).toBe("fulfilled");
		expect(sha256(first.body)).toBe(sha256(patternBytes(0, partnerBytes)));
		expect(sha256(second.body)).toBe(sha256(patternBytes(0, partnerBytes)));
		// (the second invocation's own close comes last: its timeline was not recorded)
		expect(timeline).toEqual(["http:closed", "response:finished", "handler:resolved", "http:closed"]);
		expect(stats.map((s) => s.leftovers)).toEqual([
			{ dumped: 0, aborted: 0 },
			{ dumped: 0, aborted: 0 },
		]);
		expect(server.stats.connections).toBe(1);
		expect(logger.warn).not.toHaveBeenCalled();
	});

	it("awaits a background task started by the handler, which may use context.http after the body ended", async () => {
		const { timeline, stats, logger, middleware } = setup();
		const handler = streaming()
			.use(middleware)
			.handler(async (_event: unknown, context: HttpContext) => {
				const { statusCode, body } = await context.http.request({
					path: `/pattern?bytes=${partnerBytes}`,
					method: "GET",
				});
				const bodyEnded = once(body, "end").then(() => timeline.push("body:end"));
				context.waitUntil(
					(async () => {
						await bodyEnded;
						const audit = await context.http.request({ path: "/audit", method: "POST", body: "sent" });
						await audit.body.dump();
						timeline.push("task:done");
					})(),
				);
				return { statusCode, body };
			});

		const result = await invoke(handler, { timeline });

		expect(result.settled.status).toBe("fulfilled");
		expect(sha256(result.body)).toBe(sha256(patternBytes(0, partnerBytes)));
		expect(timeline).toEqual([
			"body:end",
			"task:done",
			"http:closed",
			"response:finished",
			"handler:resolved",
		]);
		expect(server.receivedCount("POST", "/audit")).toBe(1);
		expect(stats[0]).toMatchObject({ requests: 2, background: { finished: 1, failed: 0, aborted: 0 } });
		expect(logger.warn).not.toHaveBeenCalled();
		expect(logger.error).not.toHaveBeenCalled();
	});

	it("awaits a background task that the body itself starts while it is being written", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = streaming()
			.use(middleware)
			.handler(async (_event: unknown, context: HttpContext) => {
				async function* body() {
					for (let i = 0; i < 3; i++) {
						if (i === 1) {
							context.waitUntil(
								context.http
									.request({ path: "/audit", method: "POST", body: "from the body" })
									.then(({ body }) => body.dump())
									.then(() => void timeline.push("task:done")),
							);
						}
						yield `line ${i}\n`;
					}
				}
				return { statusCode: 200, body: Readable.from(body()) };
			});

		const result = await invoke(handler, { timeline });

		expect(result.body.toString()).toBe("line 0\nline 1\nline 2\n");
		expect(server.receivedCount("POST", "/audit")).toBe(1);
		expect(stats[0]?.background).toEqual({ finished: 1, failed: 0, aborted: 0 });
		expect(timeline.indexOf("task:done")).toBeLessThan(timeline.indexOf("http:closed"));
		expect(timeline.slice(-3)).toEqual(["http:closed", "response:finished", "handler:resolved"]);
	});

	it("fails the response stream when the partner's body fails midway, and still tears down: no socket left", async () => {
		const { timeline, stats, logger, middleware, connected } = setup();
		const rejections = watchUnhandledRejections();
		const handler = proxy(middleware, `/pattern?bytes=${4 * MiB}&failAfter=${MiB}`, timeline);

		const result = await invoke(handler, { timeline });
		rejections.stop();

		expect(result.settled).toMatchObject({ status: "rejected", reason: { code: "UND_ERR_SOCKET" } });
		// the client got the bytes that arrived, then the response stream failed with the partner's error
		expect(result.finished).toBe(false);
		expect(result.streamError).toBe((result.settled as { reason: unknown }).reason);
		expect(result.body.length).toBeLessThanOrEqual(MiB);
		expect(sha256(result.body)).toBe(sha256(patternBytes(0, result.body.length)));
		expect(stats).toHaveLength(1);
		expect(timeline.indexOf("http:closed")).toBeLessThan(timeline.indexOf("handler:rejected"));
		expect(await eventually(() => connected() === 0)).toBe(true);
		expect(await eventually(() => server.stats.open === 0)).toBe(true);
		expect(logger.error).not.toHaveBeenCalled();
		expect(rejections.seen).toEqual([]);
	});

	it("closes the partner's socket when the response stream fails midway (a write error), and the next invocation is served", async () => {
		const { timeline, stats, middleware, connected } = setup();
		const handler = proxy(middleware, `/pattern?bytes=${partnerBytes}`, timeline);

		const failed = await invoke(handler, { timeline, failAfterBytes: 256 * 1024 });

		expect(failed.settled).toMatchObject({ status: "rejected", reason: { code: "EPIPE" } });
		expect(stats).toHaveLength(1);
		expect(timeline.indexOf("http:closed")).toBeLessThan(timeline.indexOf("handler:rejected"));
		// the partner's body could not be read to its end: its socket was closed, not left busy in the pool
		expect(await eventually(() => connected() === 0)).toBe(true);
		expect(await eventually(() => server.stats.open === 0)).toBe(true);

		const next = await invoke(handler);

		expect(sha256(next.body)).toBe(sha256(patternBytes(0, partnerBytes)));
		expect(stats[1]).toMatchObject({ connectionsOpened: 1, leftovers: { dumped: 0, aborted: 0 } });
	});

	it("reads the partner's body to its end when the client goes away (not an error on Lambda), and reuses the socket", async () => {
		const { stats, logger, middleware } = setup();
		const handler = proxy(middleware, `/pattern?bytes=${partnerBytes}`, []);

		const gone = await invoke(handler, { disconnectAfterBytes: 64 * 1024 });
		const next = await invoke(handler);

		expect(gone.settled.status).toBe("fulfilled");
		expect(gone.clientGone).toBe(true);
		expect(sha256(next.body)).toBe(sha256(patternBytes(0, partnerBytes)));
		expect(stats.map((s) => s.connectionsOpened)).toEqual([1, 0]);
		expect(server.stats.connections).toBe(1);
		expect(logger.warn).not.toHaveBeenCalled();
	});
});

describe("a streamed body that never reaches the client", () => {
	it("still ends the invocation's requests before it returns when an outer after replaces the streamed response", async () => {
		const { timeline, stats, middleware, connected } = setup();
		let dropped: Readable | undefined;
		const handler = streaming()
			.use({
				// registered first, so its after runs last: the body our after guarded is never read
				after: (request) => {
					request.response = { statusCode: 304, body: "" };
				},
			})
			.use(middleware)
			.handler(async (_event: unknown, context: HttpContext) => {
				const { statusCode, body } = await context.http.request({
					path: `/pattern?bytes=${partnerBytes}`,
					method: "GET",
				});
				dropped = body;
				return { statusCode, body };
			});

		try {
			const result = await invoke(handler, { timeline });

			expect(result.settled.status).toBe("fulfilled");
			expect(result.prelude).toEqual({ statusCode: 304 });
			// nothing of the invocation may outlive it: the partner's request is over (dumped or aborted) first
			expect(stats).toHaveLength(1);
			expect(timeline).toEqual(["http:closed", "response:finished", "handler:resolved"]);
			expect(await eventually(() => connected() === 0)).toBe(true);
		} finally {
			// whatever the outcome, let the dropped body's teardown free the socket
			dropped?.destroy();
		}
	});
});

describe("responses that do not stream a body are closed in the after, as before", () => {
	const jsonHandler = (mode: "standard" | "streaming", timeline: string[], middleware: HttpPoolMiddleware) =>
		(mode === "streaming" ? streaming() : middy())
			.use({ after: () => void timeline.push("outer after") })
			.use(middleware)
			.handler(async (_event: unknown, context: HttpContext) => {
				const { body } = await context.http.request({ path: "/json", method: "GET" });
				return { statusCode: 200, body: await body.text() };
			});

	it("standard mode: a { statusCode, body: string } response", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = jsonHandler("standard", timeline, middleware);

		const response = await handler({}, lambdaContext(10_000));
		timeline.push("handler:resolved");

		expect(response).toMatchObject({ statusCode: 200 });
		expect(JSON.parse((response as { body: string }).body)).toMatchObject({ ok: true });
		expect(stats).toHaveLength(1);
		expect(timeline).toEqual(["http:closed", "outer after", "handler:resolved"]);
	});

	it("streaming mode: a string body", async () => {
		const { timeline, stats, middleware } = setup();
		const handler = jsonHandler("streaming", timeline, middleware);

		const result = await invoke(handler, { timeline });

		expect(JSON.parse(result.body.toString())).toMatchObject({ ok: true });
		expect(stats).toHaveLength(1);
		expect(timeline).toEqual(["http:closed", "outer after", "response:finished", "handler:resolved"]);
	});
});
