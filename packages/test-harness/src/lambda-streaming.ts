// Response streaming as the Lambda Node runtime provides it, for tests that call a streaming handler in-process
// (Middy's executionModeStreamifyResponse, or a function wrapped with awslambda.streamifyResponse by hand).
//
// What the runtime gives a function (aws-lambda-nodejs-runtime-interface-client: src/utils/globals.ts,
// src/stream/http-response-stream.ts, src/stream/response-stream.ts, src/runtime/streaming-invoke-processor.ts),
// and what this stand-in does alike:
// - A global `awslambda` with `streamifyResponse(handler, { highWaterMark }?)`, which marks the handler under
//   Symbol.for("aws.lambda.runtime.handler.streaming") and returns the same function, and `HttpResponseStream`,
//   whose `from(stream, prelude)` sets the content type to application/vnd.awslambda.http-integration-response and,
//   right before the first write (an empty one included), writes the JSON prelude and then 8 NUL bytes.
// - Per invocation, a response stream: a Writable (on Lambda, a chunked HTTP request to the runtime API) with
//   `setContentType()` (refused after the first write), whose writes honour backpressure. A chunk that is not a
//   string or bytes is written as JSON.
// - handler(event, responseStream, context) must return a promise. Resolved: the invocation succeeds only if the
//   stream has finished ("Response stream is not finished." otherwise). Rejected: the runtime ends the stream with
//   the error in its trailers.
// - A client that goes away does not stop the invocation: the writes still succeed (the request to the runtime API
//   is alive), and the function runs to its end. A failing write (the request to the runtime API broke) is an
//   error: the stream is destroyed with it.

import { Writable } from "node:stream";
import { finished } from "node:stream/promises";
import type { Context } from "aws-lambda";
import { createLambdaContext, type LambdaContextOptions } from "./lambda-events.ts";

/** The runtime's marks on a streaming handler (set by awslambda.streamifyResponse). */
export const HANDLER_STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
export const HANDLER_HIGHWATERMARK = Symbol.for("aws.lambda.runtime.handler.streaming.highWaterMark");
export const STREAM_RESPONSE = "response";
/** The content type HttpResponseStream.from sets: a JSON prelude, 8 NUL bytes, then the body. */
export const HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response";
const DEFAULT_CONTENT_TYPE = "application/octet-stream";
const DELIMITER = Buffer.alloc(8);
/** Small, so that a body of a few KiB already meets backpressure. */
export const defaultResponseHighWaterMark = 1024;

/** The response stream a streaming handler is given. */
export type LambdaResponseStream = Writable & {
	/** Sets the response's content type; throws once something was written. */
	setContentType(contentType: string): void;
	/** Set by HttpResponseStream.from: called with the raw write just before the first write. */
	_onBeforeFirstWrite?: (write: (chunk: string | Uint8Array) => void) => void;
};

type StreamingHandler = ((
	event: unknown,
	responseStream: LambdaResponseStream,
	context: Context,
) => unknown) & {
	[HANDLER_STREAMING]?: string;
	[HANDLER_HIGHWATERMARK]?: number;
};

export interface AwsLambdaGlobal {
	streamifyResponse<T>(handler: T, options?: { highWaterMark?: number }): T;
	HttpResponseStream: {
		from(underlyingStream: LambdaResponseStream, prelude: Record<string, unknown>): LambdaResponseStream;
	};
}

const HttpResponseStream: AwsLambdaGlobal["HttpResponseStream"] = {
	from(underlyingStream, prelude) {
		underlyingStream.setContentType(HTTP_INTEGRATION_CONTENT_TYPE);
		// JSON has no raw NUL byte, so the first 8 NUL bytes are the delimiter.
		const metadataPrelude = JSON.stringify(prelude);
		underlyingStream._onBeforeFirstWrite = (write) => {
			write(metadataPrelude);
			write(new Uint8Array(DELIMITER.length));
		};
		return underlyingStream;
	},
};

const awslambdaStandIn: AwsLambdaGlobal = {
	streamifyResponse<T>(handler: T, options?: { highWaterMark?: number }): T {
		const marked = handler as unknown as StreamingHandler;
		marked[HANDLER_STREAMING] = STREAM_RESPONSE;
		if (typeof options?.highWaterMark === "number") marked[HANDLER_HIGHWATERMARK] = options.highWaterMark;
		return handler;
	},
	HttpResponseStream,
};

type WithAwsLambda = { awslambda?: AwsLambdaGlobal };

/**
 * Installs the `awslambda` global if there is none (idempotent: an existing one, the real runtime's or another
 * stand-in, is kept) and returns it. Call it before `middy({ executionMode: executionModeStreamifyResponse })`,
 * which reads the global when the handler is created.
 */
export const installLambdaStreaming = (): AwsLambdaGlobal => {
	const holder = globalThis as WithAwsLambda;
	holder.awslambda ??= awslambdaStandIn;
	return holder.awslambda;
};

export interface StreamingInvokeOptions {
	/** The response stream's highWaterMark (bytes). Default: the handler's own (streamifyResponse option), else 1 KiB. */
	highWaterMark?: number;
	/**
	 * A slow client: each write is acknowledged this many ms later (0: on the next turn of the event loop, which is
	 * enough for backpressure to build up). Default: at once.
	 */
	writeDelayMs?: number;
	/** The response stream fails (a write error, as when the request to the runtime API breaks) past this many bytes. */
	failAfterBytes?: number;
	/** The error of that failing write. Default: an EPIPE error. */
	failWith?: Error;
	/** The client goes away past this many bytes: later writes still succeed, and their bytes are not received. */
	disconnectAfterBytes?: number;
	/** Where to record the moments of the invocation; share it with the test's own markers to compare orders. */
	timeline?: string[];
}

export type Settled = { status: "fulfilled"; value: unknown } | { status: "rejected"; reason: unknown };

export interface StreamingInvocation {
	/** The prelude HttpResponseStream.from wrote (statusCode, headers, cookies), parsed; undefined without one. */
	prelude: Record<string, unknown> | undefined;
	/** The response's content type. */
	contentType: string;
	/** The body the client received (after the prelude and its delimiter). */
	body: Buffer;
	/** Every byte received, prelude included. */
	raw: Buffer;
	/** How the handler's promise settled. */
	settled: Settled;
	/** The response stream had finished (every write acknowledged, end called) when the handler settled. */
	finished: boolean;
	/** The error the response stream failed with (a failing write), if it did. */
	streamError: unknown;
	/** The error the runtime reported in the stream's trailers: the handler's rejection. */
	trailerError: { errorType: string; errorMessage: string } | undefined;
	/** The client went away (disconnectAfterBytes) before the end. */
	clientGone: boolean;
	/**
	 * The moments of the invocation, in order: "response:finished" (every write acknowledged) or
	 * "response:failed" (a write failed), "handler:resolved" or "handler:rejected", among the test's own markers.
	 */
	timeline: string[];
	/** Where the response stream and the handler ended, as positions in `timeline`. */
	endedAt: { response: number | undefined; handler: number };
	/** Backpressure: writes, 'drain' events, the most bytes ever buffered in the stream. */
	flow: { writes: number; drains: number; maxBufferedBytes: number };
}

const epipe = () =>
	Object.assign(new Error("write EPIPE: the response stream to the Lambda runtime API broke"), {
		code: "EPIPE",
	});

/**
 * Calls a streaming handler as the Lambda runtime does: with a fresh response stream, and resolves once the
 * handler's promise has settled and the stream has ended, with what the client received. Never rejects for
 * the handler's own failure (see `settled`).
 */
export const invokeStreaming = async (
	handler: unknown,
	event: unknown = {},
	context: Context | LambdaContextOptions = {},
	options: StreamingInvokeOptions = {},
): Promise<StreamingInvocation> => {
	installLambdaStreaming();
	const fn = handler as StreamingHandler;
	if (typeof fn !== "function" || fn[HANDLER_STREAMING] !== STREAM_RESPONSE) {
		throw new TypeError(
			"not a streaming handler: wrap it with awslambda.streamifyResponse (Middy: executionMode: executionModeStreamifyResponse)",
		);
	}
	const timeline = options.timeline ?? [];
	const chunks: Buffer[] = [];
	let wireBytes = 0;
	let receivedBytes = 0;
	let clientGone = false;
	let contentType = DEFAULT_CONTENT_TYPE;
	let written = false;
	let streamError: unknown;
	const flow = { writes: 0, drains: 0, maxBufferedBytes: 0 };
	// What the client receives: everything, or up to the moment it went away.
	const receive = (chunk: Buffer) => {
		const goneAt = options.disconnectAfterBytes;
		const keep =
			goneAt === undefined ? chunk.length : Math.max(0, Math.min(chunk.length, goneAt - receivedBytes));
		if (keep < chunk.length) clientGone = true;
		if (keep > 0) chunks.push(Buffer.from(chunk.subarray(0, keep)));
		receivedBytes += keep;
	};

	const stream = new Writable({
		highWaterMark: options.highWaterMark ?? fn[HANDLER_HIGHWATERMARK] ?? defaultResponseHighWaterMark,
		write(chunk: Buffer, _encoding, callback) {
			const failAt = options.failAfterBytes;
			if (failAt !== undefined && wireBytes + chunk.length > failAt) {
				receive(chunk.subarray(0, Math.max(0, failAt - wireBytes)));
				wireBytes = failAt;
				callback(options.failWith ?? epipe());
				return;
			}
			receive(chunk);
			wireBytes += chunk.length;
			const delay = options.writeDelayMs;
			if (delay === undefined) callback();
			else if (delay <= 0) setImmediate(callback);
			else setTimeout(callback, delay);
		},
	}) as LambdaResponseStream;
	stream.on("drain", () => flow.drains++);
	stream.on("finish", () => timeline.push("response:finished"));
	// As the runtime does: a failing stream is recorded, never an uncaught 'error'.
	stream.on("error", (error) => {
		streamError = error;
		timeline.push("response:failed");
	});
	stream.setContentType = (type: string) => {
		if (written) throw new Error("Cannot set content-type, too late.");
		contentType = type;
	};
	const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
	stream.write = ((chunk: unknown, ...rest: unknown[]) => {
		const data =
			typeof chunk === "string" || chunk instanceof Uint8Array ? chunk : (JSON.stringify(chunk) ?? "");
		if (!written && typeof stream._onBeforeFirstWrite === "function") {
			stream._onBeforeFirstWrite((raw) => write(raw));
		}
		written = true;
		flow.writes++;
		const accepted = write(data, ...rest);
		flow.maxBufferedBytes = Math.max(flow.maxBufferedBytes, stream.writableLength);
		return accepted;
	}) as typeof stream.write;

	const lambdaContext = "getRemainingTimeInMillis" in context ? context : createLambdaContext(context);
	let settled: Settled;
	try {
		const result = fn(event, stream, lambdaContext);
		if (typeof (result as { then?: unknown } | null)?.then !== "function") {
			throw new Error("Streaming does not support non-async handlers.");
		}
		settled = { status: "fulfilled", value: await result };
	} catch (reason) {
		settled = { status: "rejected", reason };
	}
	timeline.push(settled.status === "fulfilled" ? "handler:resolved" : "handler:rejected");
	const handlerAt = timeline.length - 1;

	let trailerError: StreamingInvocation["trailerError"];
	if (settled.status === "rejected") {
		// The runtime reports the error in the trailers, and ends the stream.
		const reason = settled.reason as { name?: unknown; message?: unknown } | null;
		trailerError = {
			errorType: typeof reason?.name === "string" ? reason.name : "Error",
			errorMessage: typeof reason?.message === "string" ? reason.message : String(settled.reason),
		};
		if (!stream.destroyed && !stream.writableEnded) stream.end();
	}
	// Writes already accepted are still being acknowledged (a slow client): wait for the end of the stream.
	if (stream.writableEnded && !stream.destroyed) await finished(stream).catch(() => {});
	const isFinished = stream.writableFinished;
	// A handler that resolved without ending its stream: the runtime fails the invocation; nothing may hang here.
	if (!stream.destroyed && !stream.writableEnded) stream.destroy();

	const raw = Buffer.concat(chunks);
	let prelude: Record<string, unknown> | undefined;
	let body = raw;
	if (contentType === HTTP_INTEGRATION_CONTENT_TYPE) {
		const at = raw.indexOf(DELIMITER);
		if (at >= 0) {
			prelude = JSON.parse(raw.subarray(0, at).toString("utf8")) as Record<string, unknown>;
			body = raw.subarray(at + DELIMITER.length);
		} else {
			body = Buffer.alloc(0);
		}
	}
	const responseAt = timeline.findIndex(
		(moment) => moment === "response:finished" || moment === "response:failed",
	);
	return {
		prelude,
		contentType,
		body,
		raw,
		settled,
		finished: isFinished,
		streamError,
		trailerError,
		clientGone,
		timeline,
		endedAt: { response: responseAt >= 0 ? responseAt : undefined, handler: handlerAt },
		flow,
	};
};
