import { fileURLToPath } from "node:url";
import middy from "@middy/core";
import {
	type ExecutionEnvironment,
	startExecutionEnvironment,
	startHttpServer,
	startTcpProxy,
	type TcpProxy,
} from "@middy-conn/test-harness";
import { useHttpServer, usePoolCleanup } from "@middy-conn/test-harness/test-fixtures";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
	closeHttpPools,
	errorCodes,
	type HttpPoolOptions,
	type HttpPoolStats,
	httpPool,
} from "../src/index.ts";
import { asLambda, type HttpContext, lambdaContext } from "./helpers.ts";

const fixture = fileURLToPath(new URL("./fixtures/http-function.ts", import.meta.url));

const server = useHttpServer();
let proxy: TcpProxy;

beforeEach(async () => {
	server.resetStats();
	proxy = await startTcpProxy({ host: "127.0.0.1", port: server.port });
});

afterEach(async () => {
	await proxy.close();
});
usePoolCleanup(closeHttpPools);

interface Outcome {
	statusCode?: number;
	body?: unknown;
	error?: Error & { code?: string; retrySafe?: boolean };
	stats: HttpPoolStats;
}

/** A function that sends one request per invocation, through the proxy (or to `origin`). */
const lambdaFunction = (options: HttpPoolOptions = {}) =>
	asLambda(
		middy(
			async (
				event: { method: string; path: string; body?: string; idempotent?: boolean },
				context: HttpContext,
			): Promise<Outcome> => {
				try {
					const { statusCode, body } = await context.http.request({
						method: event.method,
						path: event.path,
						...(event.body === undefined ? {} : { body: event.body }),
						...(event.idempotent === undefined ? {} : { idempotent: event.idempotent }),
					});
					return { statusCode, body: await body.text(), stats: context.http.invocationStats };
				} catch (error) {
					return { error: error as Outcome["error"], stats: context.http.invocationStats };
				}
			},
		).use(httpPool({ origin: `http://127.0.0.1:${proxy.port}`, logger: false, ...options })),
	);

describe("a keep-alive connection that died while the environment was idle", () => {
	it("retries a GET on a new connection when a NAT dropped the old one silently", async () => {
		const invoke = lambdaFunction();
		expect((await invoke({ method: "GET", path: "/json" }, lambdaContext())).statusCode).toBe(200);
		expect(proxy.dropIdle()).toBe(1);

		const outcome = await invoke({ method: "GET", path: "/json" }, lambdaContext());

		expect(outcome.error).toBeUndefined();
		expect(outcome.statusCode).toBe(200);
		expect(proxy.stats.resets).toBe(1);
		// The first attempt went out on the dead socket, the replay on a new one.
		expect(outcome.stats).toMatchObject({ requests: 2, connectionsReused: 1, connectionsOpened: 1 });
	});

	it("would fail that GET without the retry: the retry is what saves it", async () => {
		const invoke = lambdaFunction({ retry: false });
		await invoke({ method: "GET", path: "/json" }, lambdaContext());
		proxy.dropIdle();

		const outcome = await invoke({ method: "GET", path: "/json" }, lambdaContext());

		expect(outcome.error).toMatchObject({
			code: expect.stringMatching(/^(ECONNRESET|UND_ERR_SOCKET|EPIPE)$/),
		});
	});

	it("never replays a POST: it fails with a code that says a retry is unsafe, and the server got it at most once", async () => {
		const invoke = lambdaFunction();
		await invoke({ method: "GET", path: "/json" }, lambdaContext());
		proxy.dropIdle();

		const outcome = await invoke({ method: "POST", path: "/echo", body: "order 42" }, lambdaContext());

		expect(outcome.statusCode).toBeUndefined();
		expect(outcome.error).toMatchObject({
			name: "MiddyConnError",
			code: errorCodes.mayHaveBeenSent,
			retrySafe: false,
			package: "@middy-conn/http-pool",
		});
		expect(outcome.error?.message).toMatch(/POST http:\/\/127\.0\.0\.1:\d+\/echo failed after it was sent/);
		expect((outcome.error?.cause as { code?: string } | undefined)?.code).toMatch(
			/^(ECONNRESET|UND_ERR_SOCKET|EPIPE)$/,
		);
		expect(outcome.stats.requests).toBe(1);
		expect(server.receivedCount("POST", "/echo")).toBeLessThanOrEqual(1);
	});

	it("replays a POST that opts in with idempotent: true (it carries an idempotency key)", async () => {
		const invoke = lambdaFunction();
		await invoke({ method: "GET", path: "/json" }, lambdaContext());
		proxy.dropIdle();

		const outcome = await invoke(
			{ method: "POST", path: "/echo", body: "order 42", idempotent: true },
			lambdaContext(),
		);

		expect(outcome.statusCode).toBe(200);
		expect(server.receivedCount("POST", "/echo")).toBe(1);
	});

	it("replays a POST that provably never left (connection refused), and says retrying is safe once it gives up", async () => {
		const gone = await startHttpServer();
		const origin = gone.origin;
		await gone.close();
		const invoke = middy(async (_event: unknown, context: HttpContext) =>
			context.http
				.request({ method: "POST", path: "/orders", body: "{}" })
				.catch((error: Error) => ({ error, stats: context.http.invocationStats })),
		).use(httpPool({ origin, logger: false, retry: { maxRetries: 2, minTimeout: 1 } }));

		const outcome = (await invoke({}, lambdaContext())) as {
			error: Error & { code: string };
			stats: HttpPoolStats;
		};

		expect(outcome.error).toMatchObject({ code: errorCodes.notSent, retrySafe: true });
		expect((outcome.error.cause as { code?: string }).code).toBe("ECONNREFUSED");
		expect(outcome.stats.requests).toBe(0);
	});

	it("does not replay a GET whose body was cut off midway: the caller already has its response", async () => {
		server.route("/cut", (_req, res) => {
			res.writeHead(200, { "content-length": "1000" });
			res.write("x".repeat(100), () => res.socket?.destroy());
		});
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			const { statusCode, body } = await context.http.request({ path: "/cut", method: "GET" });
			return { statusCode, text: await body.text().catch((error: Error & { code?: string }) => error) };
		}).use(httpPool({ origin: server.origin, logger: false }));

		const { statusCode, text } = await handler({}, lambdaContext());

		expect(statusCode).toBe(200);
		expect(text).toMatchObject({ code: expect.stringMatching(/^(UND_ERR_SOCKET|ECONNRESET)$/) });
		expect(server.receivedCount("GET", "/cut")).toBe(1);
	});

	it("does not replay a 503: a status code is an answer", async () => {
		const invoke = lambdaFunction();
		const outcome = await invoke({ method: "GET", path: "/status/503" }, lambdaContext());
		expect(outcome.statusCode).toBe(503);
		expect(server.receivedCount("GET", "/status/503")).toBe(1);
	});
});

describe("an execution environment frozen between invocations", () => {
	let environment: ExecutionEnvironment | undefined;

	afterEach(async () => {
		await environment?.kill();
		environment = undefined;
	});

	const start = async (origin: string) => {
		environment = await startExecutionEnvironment({ module: fixture, env: { API_ORIGIN: origin } });
		return environment;
	};

	it("opens one connection for 100 warm invocations, frozen in between", async () => {
		const lambda = await start(server.origin);
		const opened: number[] = [];
		for (let i = 0; i < 100; i++) {
			const outcome = await lambda.invoke<{ statusCode: number; stats: HttpPoolStats }>({ path: "/json" });
			expect(outcome.result?.statusCode).toBe(200);
			opened.push(outcome.result?.stats.connectionsOpened ?? -1);
		}
		expect(lambda.stats).toMatchObject({ invocations: 100, coldStarts: 1 });
		expect(opened.reduce((sum, n) => sum + n, 0)).toBe(1);
		expect(server.stats.connections).toBe(1);
	});

	it("succeeds after a thaw although the server closed the idle connection meanwhile", async () => {
		const lambda = await start(server.origin);
		const first = await lambda.invoke<{ statusCode: number }>({ path: "/json" });
		expect(first.result?.statusCode).toBe(200);
		expect(lambda.frozen).toBe(true);

		server.closeIdleConnections();
		await vi.waitFor(() => expect(server.stats.open).toBe(0));

		const second = await lambda.invoke<{ statusCode: number; stats: HttpPoolStats }>({ path: "/json" });
		expect(second.cold).toBe(false);
		expect(second.result).toMatchObject({ statusCode: 200, stats: { connectionsOpened: 1 } });
	});

	it("succeeds after a thaw although a NAT forgot the connection meanwhile, without telling anyone", async () => {
		const lambda = await start(`http://127.0.0.1:${proxy.port}`);
		expect((await lambda.invoke<{ statusCode: number }>({ path: "/json" })).result?.statusCode).toBe(200);
		expect(lambda.frozen).toBe(true);

		expect(proxy.dropIdle()).toBe(1);

		const second = await lambda.invoke<{ statusCode: number; stats: HttpPoolStats }>({ path: "/json" });
		expect(second.result).toMatchObject({
			statusCode: 200,
			stats: { requests: 2, connectionsReused: 1, connectionsOpened: 1 },
		});
		expect(proxy.stats.resets).toBe(1);
	});
});
