// The stand-in for the Lambda runtime's response streaming: the `awslambda` global, HttpResponseStream's prelude,
// and a response stream with backpressure, a slow client, a client that goes away and a stream that breaks.
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import middy from "@middy/core";
import { executionModeStreamifyResponse } from "@middy/core/executionModeStreamifyResponse";
import { afterEach, describe, expect, it } from "vitest";
import {
	type AwsLambdaGlobal,
	HANDLER_HIGHWATERMARK,
	HANDLER_STREAMING,
	HTTP_INTEGRATION_CONTENT_TYPE,
	installLambdaStreaming,
	invokeStreaming,
	type LambdaResponseStream,
} from "../src/lambda-streaming.ts";

const awslambda = installLambdaStreaming();

type Holder = { awslambda?: AwsLambdaGlobal };

/** `count` chunks of `size` bytes, each filled with its own index. */
const chunks = (count: number, size: number) =>
	Array.from({ length: count }, (_, i) => Buffer.alloc(size, i % 256));

const rawHandler = (
	body: (stream: LambdaResponseStream) => Promise<void>,
	options?: { highWaterMark?: number },
) =>
	awslambda.streamifyResponse(async (_event: unknown, stream: LambdaResponseStream) => body(stream), options);

describe("the awslambda global", () => {
	const saved = (globalThis as Holder).awslambda;
	afterEach(() => {
		(globalThis as Holder).awslambda = saved;
	});

	it("is installed once: installing again returns the same object", () => {
		expect(installLambdaStreaming()).toBe(awslambda);
		expect((globalThis as Holder).awslambda).toBe(awslambda);
	});

	it("keeps an awslambda that is already there (the real runtime's)", () => {
		const existing = { ...awslambda };
		(globalThis as Holder).awslambda = existing;
		expect(installLambdaStreaming()).toBe(existing);
	});

	it("marks a handler as streaming and returns that same function, as the runtime does", () => {
		const handler = async () => {};
		const marked = awslambda.streamifyResponse(handler, { highWaterMark: 4096 });
		expect(marked).toBe(handler);
		expect((marked as unknown as Record<symbol, unknown>)[HANDLER_STREAMING]).toBe("response");
		expect((marked as unknown as Record<symbol, unknown>)[HANDLER_HIGHWATERMARK]).toBe(4096);
	});
});

describe("invokeStreaming", () => {
	it("refuses a handler that is not a streaming one", async () => {
		await expect(invokeStreaming(async () => "buffered")).rejects.toThrow(/not a streaming handler/);
	});

	it("gives the handler a response stream and returns every byte written, in order", async () => {
		const written = chunks(40, 1000);
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				stream.setContentType("text/plain");
				await pipeline(Readable.from(written), stream);
			}),
		);
		expect(result.settled).toEqual({ status: "fulfilled", value: undefined });
		expect(result.finished).toBe(true);
		expect(result.contentType).toBe("text/plain");
		expect(result.prelude).toBeUndefined();
		expect(result.body.equals(Buffer.concat(written))).toBe(true);
		expect(result.timeline).toEqual(["response:finished", "handler:resolved"]);
		expect(result.endedAt).toEqual({ response: 0, handler: 1 });
	});

	it("writes the prelude and 8 NUL bytes before the first write after HttpResponseStream.from", async () => {
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				const http = awslambda.HttpResponseStream.from(stream, {
					statusCode: 201,
					headers: { "content-type": "application/x-ndjson" },
				});
				http.write('{"a":1}\n');
				await new Promise<void>((resolve) => http.end(resolve));
			}),
		);
		expect(result.contentType).toBe(HTTP_INTEGRATION_CONTENT_TYPE);
		expect(result.raw.toString("utf8")).toBe(
			`{"statusCode":201,"headers":{"content-type":"application/x-ndjson"}}${"\0".repeat(8)}{"a":1}\n`,
		);
		expect(result.prelude).toEqual({ statusCode: 201, headers: { "content-type": "application/x-ndjson" } });
		expect(result.body.toString("utf8")).toBe('{"a":1}\n');
	});

	it("refuses a content type set after the first write, as the runtime does", async () => {
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				stream.write("x");
				stream.setContentType("text/plain");
			}),
		);
		expect(result.settled.status).toBe("rejected");
		expect(result.trailerError).toEqual({
			errorType: "Error",
			errorMessage: "Cannot set content-type, too late.",
		});
	});

	it("serves a Middy streaming handler: the prelude from the response, the body from its stream", async () => {
		const handler = middy({ executionMode: executionModeStreamifyResponse }).handler(async () => ({
			statusCode: 200,
			headers: { "content-type": "text/plain" },
			body: Readable.from(["hello, ", "world"]),
		}));
		const result = await invokeStreaming(handler);
		expect(result.prelude).toEqual({ statusCode: 200, headers: { "content-type": "text/plain" } });
		expect(result.body.toString()).toBe("hello, world");
		expect(result.settled.status).toBe("fulfilled");
	});

	it("serves a Middy response with an empty body: the prelude alone", async () => {
		const handler = middy({ executionMode: executionModeStreamifyResponse }).handler(async () => ({
			statusCode: 204,
		}));
		const result = await invokeStreaming(handler);
		expect(result.prelude).toEqual({ statusCode: 204 });
		expect(result.body.length).toBe(0);
	});

	it("applies backpressure: a slow client makes the writer wait for 'drain', and little is ever buffered", async () => {
		const written = chunks(64, 512);
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				await pipeline(Readable.from(written), stream);
			}),
			{},
			{},
			{ highWaterMark: 1024, writeDelayMs: 0 },
		);
		expect(result.body.equals(Buffer.concat(written))).toBe(true);
		expect(result.flow.drains).toBeGreaterThan(0);
		// pipeline stops writing once the buffer reaches the highWaterMark: at most one chunk beyond it
		expect(result.flow.maxBufferedBytes).toBeLessThanOrEqual(1024 + 512);
	});

	it("uses the highWaterMark the handler was streamified with", async () => {
		let seen: number | undefined;
		await invokeStreaming(
			rawHandler(
				async (stream) => {
					seen = stream.writableHighWaterMark;
					stream.end();
				},
				{ highWaterMark: 4096 },
			),
		);
		expect(seen).toBe(4096);
	});

	it("fails the response stream on a write past failAfterBytes: the writer gets the error", async () => {
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				await pipeline(Readable.from(chunks(10, 1000)), stream);
			}),
			{},
			{},
			{ failAfterBytes: 2500 },
		);
		expect(result.settled).toMatchObject({ status: "rejected", reason: { code: "EPIPE" } });
		expect(result.streamError).toMatchObject({ code: "EPIPE" });
		expect(result.finished).toBe(false);
		expect(result.body.length).toBe(2500);
		expect(result.timeline).toEqual(["response:failed", "handler:rejected"]);
	});

	it("fails with the error it is given", async () => {
		const broken = new Error("runtime API connection reset");
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				await pipeline(Readable.from(chunks(2, 10)), stream);
			}),
			{},
			{},
			{ failAfterBytes: 0, failWith: broken },
		);
		expect(result.settled).toEqual({ status: "rejected", reason: broken });
	});

	it("lets the function run to its end when the client goes away: not an error on Lambda", async () => {
		const written = chunks(10, 1000);
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				await pipeline(Readable.from(written), stream);
			}),
			{},
			{},
			{ disconnectAfterBytes: 3000 },
		);
		expect(result.settled.status).toBe("fulfilled");
		expect(result.finished).toBe(true);
		expect(result.clientGone).toBe(true);
		expect(result.body.equals(Buffer.concat(written).subarray(0, 3000))).toBe(true);
	});

	it("ends the stream with the error in its trailers when the handler rejects", async () => {
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				stream.write("partial");
				throw new TypeError("boom");
			}),
		);
		expect(result.settled).toMatchObject({ status: "rejected", reason: { message: "boom" } });
		expect(result.trailerError).toEqual({ errorType: "TypeError", errorMessage: "boom" });
		expect(result.body.toString()).toBe("partial");
		expect(result.timeline).toEqual(["handler:rejected", "response:finished"]);
	});

	it("reports a handler that resolved without ending its stream (the runtime fails such an invocation)", async () => {
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				stream.write("never ended");
			}),
		);
		expect(result.settled.status).toBe("fulfilled");
		expect(result.finished).toBe(false);
	});

	it("refuses a handler that does not return a promise, as the runtime does", async () => {
		const result = await invokeStreaming(awslambda.streamifyResponse(() => undefined));
		expect(result.settled).toMatchObject({
			status: "rejected",
			reason: { message: "Streaming does not support non-async handlers." },
		});
	});

	it("records the moments in the timeline it is given, among the test's own", async () => {
		const timeline: string[] = ["test:start"];
		const result = await invokeStreaming(
			rawHandler(async (stream) => {
				timeline.push("handler:writing");
				await pipeline(Readable.from(["x"]), stream);
			}),
			{},
			{},
			{ timeline },
		);
		expect(result.timeline).toBe(timeline);
		expect(timeline).toEqual(["test:start", "handler:writing", "response:finished", "handler:resolved"]);
		expect(result.endedAt).toEqual({ response: 2, handler: 3 });
	});
});
