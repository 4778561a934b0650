// Response streaming: teardown waits for the body.
//
// With Middy's executionModeStreamifyResponse the `after`s run before the body is written to Lambda's response
// stream, and the invocation lasts until that body has ended. A body that still reads from context.db (a query
// stream, rows fetched while writing) or from context.http (a partner's body proxied through) needs its
// connections until its last byte. So when the response holds a body stream, teardown is handed to the body: the
// body is passed through a stream of ours that runs teardown when the body ends (before it signals its own end,
// so the invocation cannot finish first), errors or is destroyed.
//
// Which responses stream, exactly as Middy's streaming mode reads them: the response itself when it is a stream,
// or the `body` of a response with a `statusCode` (an HTTP response); a stream is what passes Middy's own test,
// `_readableState || instanceof ReadableStream`. In standard mode such a response is a mistake that nothing
// reads (the runtime serialises it to JSON): use executionModeStreamifyResponse to return a body stream.
import { pipeline, Readable, Transform } from "node:stream";
import { ReadableStream } from "node:stream/web";

const isBodyStream = (value: unknown): value is Readable | ReadableStream =>
	typeof value === "object" &&
	value !== null &&
	((value as { _readableState?: unknown })._readableState !== undefined || value instanceof ReadableStream);

/** Where a response keeps its body stream, if it streams one. */
export const streamedBody = (
	response: unknown,
): { get: () => Readable | ReadableStream; set: (body: Readable) => unknown } | undefined => {
	if (isBodyStream(response)) return { get: () => response, set: (body) => body };
	const http = response as { statusCode?: unknown; body?: unknown } | null | undefined;
	const body = http?.statusCode ? http.body : undefined;
	if (isBodyStream(body)) {
		return {
			get: () => body,
			set: (guarded) => {
				(response as { body: unknown }).body = guarded;
				return response;
			},
		};
	}
	return undefined;
};

/** How the body ended: with its last byte, or with an error (a failed source, a destroyed stream). */
export type BodyEnd = { ok: true } | { ok: false; error: unknown };

/**
 * A stream that yields `body`'s bytes and runs `onEnd` once, when the body has ended, failed or been destroyed.
 * The stream ends (or fails) only after `onEnd` has settled; a rejection of `onEnd` fails the stream with it.
 */
export const guardBody = (
	body: Readable | ReadableStream,
	onEnd: (end: BodyEnd) => Promise<void>,
): Readable => {
	const source = body instanceof ReadableStream ? Readable.fromWeb(body) : body;
	let ending: Promise<void> | undefined;
	const end = (outcome: BodyEnd) => {
		ending ??= onEnd(outcome);
		return ending;
	};
	const objectMode = source.readableObjectMode;
	const guarded = new Transform({
		readableObjectMode: objectMode,
		writableObjectMode: objectMode,
		transform(chunk, _encoding, callback) {
			callback(null, chunk);
		},
		flush(callback) {
			end({ ok: true }).then(() => callback(), callback);
		},
		destroy(error, callback) {
			const reason = error ?? new Error("the response body was destroyed before its end");
			end({ ok: false, error: reason }).then(
				() => callback(error),
				() => callback(error),
			);
		},
	});
	// A failing source destroys `guarded` with its error (and the other way round).
	pipeline(source, guarded, () => {});
	return guarded;
};
