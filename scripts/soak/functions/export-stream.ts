// export-stream (response streaming, scoped connection with transaction: true, a warm HTTP pool of 2): exports of
// rows streamed from the DB, then a partner's body proxied through, as one NDJSON-then-bytes body.
//
// Every step knows the body its client must receive (the rows are the soak's own, soak_stream_rows; the partner's
// /pattern body is reproducible): a body delivered whole has exactly those bytes (SHA-256 and length); a body that
// failed midway is a prefix of them, never anything else. The export's record, written in the invocation's
// transaction before the first byte, is committed if the body was delivered whole, and never when its source was
// not read to its end (a body that failed midway: rolled back; see below for the body's last bytes). After each step
// the app user is back at 0 DB connections (the connection closed after the body's last byte, or given up when the
// body failed) and the partner holds no more sockets than the pool's `connections`.
//
// Faults: stream-db and stream-partner stream one source only: cleanly, to a slow client (every write of the
// response stream acknowledged a turn of the event loop later: backpressure), into a response stream that breaks
// midway (a write error, as when the runtime API request breaks; half of those within the body's last 4 KiB, when
// the source has ended and its last bytes are still on their way), or, for the partner, from a body that breaks
// off midway (the partner closes the connection).
//
// The COMMIT happens when the body's source has ended (teardown runs when the middlewares' guard has read it to
// its end), while the end of the body may still be on its way to the client: a response stream that breaks after
// that leaves the export committed and the body cut short. That is the documented semantics (committed at the end
// of the body, as a standard-mode answer lost on the network after its COMMIT): it is counted as "answer lost
// after commit", not as a leak, but only when the fixture saw the source read to its end before the response
// stream broke. A record committed for a body whose source had not been read to its end is a leak.
import { createHash } from "node:crypto";
import { patternBytes } from "@middy-conn/test-harness";
import type { RowDataPacket } from "mysql2/promise";
import { type Directive, STREAM_ROWS, type StreamedAnswer, statementTag, streamLine } from "../directive.ts";
import { isClearErrorValue } from "../invariants.ts";
import {
	checkMarkerLanded,
	checkScopedBaseline,
	type Driver,
	directiveOf,
	integer,
	SETTINGS,
	type SoakContext,
} from "./common.ts";

/** The NDJSON of every row, and where each row count ends in it. */
const ndjson = (() => {
	const lines = Array.from({ length: STREAM_ROWS }, (_, i) => Buffer.from(streamLine(i + 1)));
	const ends = [0];
	for (const line of lines) ends.push((ends[ends.length - 1] as number) + line.length);
	return { all: Buffer.concat(lines), ends };
})();

/** The HTTP prelude before the body (HttpResponseStream.from): JSON, then 8 NUL bytes. */
const PRELUDE_BYTES =
	JSON.stringify({ statusCode: 200, headers: { "content-type": "application/x-ndjson" } }).length + 8;

/** At most this many bytes of the partner's body per export. */
const MAX_PARTNER_BYTES = 256 * 1024;
const pattern = patternBytes(0, MAX_PARTNER_BYTES);

type Variant = "clean" | "slow-client" | "client-breaks" | "partner-breaks";

const expectedBody = (rows: number, bytes: number) =>
	Buffer.concat([ndjson.all.subarray(0, ndjson.ends[rows]), pattern.subarray(0, bytes)]);

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** The response stream broke, and the body's source had been read to its end before that. */
const brokeAfterSourceEnded = (streamed: StreamedAnswer): boolean => {
	const timeline = streamed.timeline ?? [];
	const ended = timeline.indexOf("source:ended");
	const broke = timeline.indexOf("response:failed");
	return ended >= 0 && broke > ended;
};

export const exportStream = (context: SoakContext): Driver => {
	const partner = context.partners.exporter;
	const { user, database } = context.users.exporter;
	const tally = {
		whole: 0,
		wholeChecked: 0,
		brokenOff: 0,
		prefixIntact: 0,
		bytes: 0,
		committed: 0,
		rolledBack: 0,
		answerLostAfterCommit: 0,
		slowClients: 0,
		socketsPeak: 0,
	};
	const baseline = { checked: 0, held: 0 };
	const byVariant = new Map<Variant, number>();

	const recordsOf = async (exportId: string) =>
		Number(
			(
				await context
					.admin()
					.query<RowDataPacket[]>(
						`SELECT COUNT(*) AS n FROM \`${database}\`.soak_exports WHERE export_id = ?`,
						[exportId],
					)
			)[0]?.n ?? 0,
		);

	return {
		fn: "export-stream",
		async prepare(run) {
			const fault = run.step.fault;
			const exportId = `x-${run.token}`;
			let rows = 0;
			let bytes = 0;
			let variant: Variant = "clean";
			if (fault === "stream-db" || fault === undefined) rows = integer(run.next, 1, STREAM_ROWS);
			if (fault === "stream-partner" || fault === undefined) bytes = integer(run.next, 1, MAX_PARTNER_BYTES);
			if (fault === "stream-db" || fault === "stream-partner") {
				const draw = run.next();
				variant =
					draw < 0.4
						? "clean"
						: draw < 0.6
							? "slow-client"
							: fault === "stream-partner" && draw < 0.8
								? "partner-breaks"
								: "client-breaks";
			}
			if (fault === "after-throws" || fault === "early-background") {
				rows = integer(run.next, 1, 200);
				bytes = integer(run.next, 1, 4096);
			}
			byVariant.set(variant, (byVariant.get(variant) ?? 0) + 1);
			const body = expectedBody(rows, bytes);
			const stream: NonNullable<Directive["stream"]> = {};
			let failAfter: number | undefined;
			if (variant === "slow-client") stream.writeDelayMs = 0;
			// Past the prelude, before the body's end: anywhere, or (half the time) within its last 4 KiB, when the
			// source has ended and its last bytes are still on their way to the client.
			if (variant === "client-breaks") {
				const left = run.next() < 0.5 ? integer(run.next, 1, Math.min(4096, body.length)) : undefined;
				stream.failAfterBytes =
					PRELUDE_BYTES + (left === undefined ? integer(run.next, 0, body.length - 1) : body.length - left);
			}
			if (variant === "partner-breaks") failAfter = integer(run.next, 0, bytes - 1);
			const breaks = variant === "client-breaks" || variant === "partner-breaks";
			const event = {
				exportId,
				tag: statementTag(run.token),
				rows,
				bytes,
				...(failAfter === undefined ? {} : { failAfter }),
			};
			const streamedOf = (outcome: { result?: unknown }) =>
				(outcome.result as { streamed?: StreamedAnswer } | undefined)?.streamed;
			return {
				event,
				directive: { ...directiveOf(run), stream },
				classify(outcome) {
					const streamed = streamedOf(outcome);
					if (!outcome.ok || !streamed) return "unclear";
					if (streamed.status === "fulfilled") return "succeeded";
					return isClearErrorValue(streamed.error) ? "clear error" : "unclear";
				},
				expected(outcome, result) {
					const streamed = streamedOf(outcome);
					if (result === "clear error" && run.afterRestart) return true;
					if (fault === "early-background") return result === "succeeded" && streamed?.statusCode === 202;
					if (fault === "after-throws")
						return result === "clear error" && streamed?.error?.name === "SoakFault";
					if (breaks) return result === "clear error";
					return (
						result === "succeeded" &&
						streamed?.statusCode === 200 &&
						streamed.bytes === body.length &&
						streamed.sha256 === sha256(body)
					);
				},
				async check(outcome) {
					const streamed = streamedOf(outcome);
					const records = await recordsOf(exportId);
					if (fault === "early-background") {
						await checkMarkerLanded(context, run, "export-stream", database, outcome);
					} else if (streamed && fault !== "after-throws") {
						tally.bytes += streamed.bytes;
						if (variant === "slow-client") tally.slowClients++;
						if (streamed.status === "fulfilled") {
							tally.wholeChecked++;
							if (streamed.bytes === body.length && streamed.sha256 === sha256(body)) tally.whole++;
							else {
								context.ledger.violation(
									run.afterRestart ? "unexpected" : "lost",
									run.row,
									"export-stream",
									`export ${exportId} answered as delivered, with ${streamed.bytes} of ${body.length} bytes (${streamed.sha256 === sha256(body) ? "same" : "other"} content)`,
								);
							}
						} else {
							tally.brokenOff++;
							// What the client received before the failure is the start of the body, byte for byte.
							if (
								streamed.bytes <= body.length &&
								streamed.sha256 === sha256(body.subarray(0, streamed.bytes))
							) {
								tally.prefixIntact++;
							} else {
								context.ledger.violation(
									"leak",
									run.row,
									"export-stream",
									`export ${exportId} failed after ${streamed.bytes} bytes that are not the start of its body`,
								);
							}
						}
					}
					// The record is committed with the body's last byte, and only then.
					const delivered = outcome.ok && streamed?.status === "fulfilled" && fault !== "early-background";
					const unknown = run.afterRestart || /unknown/.test(streamed?.error?.message ?? "");
					if (delivered && records === 1) tally.committed++;
					else if (!delivered && records === 0) tally.rolledBack++;
					else if (records > 1) {
						context.ledger.violation(
							"duplicated",
							run.row,
							"export-stream",
							`export ${exportId} recorded ${records} times`,
						);
					} else if (delivered && records === 0 && !unknown) {
						context.ledger.violation(
							"lost",
							run.row,
							"export-stream",
							`export ${exportId} was delivered whole, and its record (committed at the body's end) is missing`,
						);
					} else if (!delivered && records === 1 && streamed && brokeAfterSourceEnded(streamed)) {
						// Committed at the end of the body's source; the response stream broke on the last bytes.
						tally.answerLostAfterCommit++;
						context.ledger.note(
							"answer-lost-after-commit",
							run.row,
							"export-stream",
							`export ${exportId}: the response stream broke after the body's source had been read to its end (client got ${streamed.bytes} of ${body.length} bytes), and the export was committed`,
						);
					} else if (!delivered && records === 1 && !unknown) {
						context.ledger.violation(
							"leak",
							run.row,
							"export-stream",
							`export ${exportId} failed (${streamed?.error?.message?.slice(0, 120)}), and its record was committed all the same`,
						);
					}
					baseline.checked++;
					if (await checkScopedBaseline(context, run, "export-stream", user)) baseline.held++;
					const open = partner.server.stats.open;
					tally.socketsPeak = Math.max(tally.socketsPeak, open);
					if (open > SETTINGS.exportConnections) {
						context.ledger.violation(
							"leak",
							run.row,
							"export-stream",
							`the partner has ${open} sockets open after the invocation (connections: ${SETTINGS.exportConnections})`,
						);
					}
				},
			};
		},
		async reconcile() {
			// A record committed late (after its step was checked) would be a transaction that outlived its invocation.
			const rows = await context
				.admin()
				.query<RowDataPacket[]>(
					`SELECT export_id AS id, COUNT(*) AS n FROM \`${database}\`.soak_exports GROUP BY export_id HAVING n > 1`,
				);
			for (const row of rows) {
				context.ledger.violation(
					"duplicated",
					"none",
					"export-stream",
					`export ${row.id} recorded ${row.n} times`,
				);
			}
		},
		figures: () => [
			`export-stream (streaming, scoped, transaction): ${tally.whole}/${tally.wholeChecked} bodies delivered whole (SHA-256 and length of every byte, DB rows then the partner's body), ` +
				`${tally.prefixIntact}/${tally.brokenOff} broken off midway delivered an intact prefix (client: ${byVariant.get("client-breaks") ?? 0} response streams broke, ${byVariant.get("partner-breaks") ?? 0} partner bodies broke off), ${tally.slowClients} slow clients; ` +
				`${(tally.bytes / 1024 / 1024).toFixed(1)} MiB streamed; export records committed with the body's end ${tally.committed}, rolled back ${tally.rolledBack}, ` +
				`committed and then the response stream broke on the body's last bytes (answer lost after commit) ${tally.answerLostAfterCommit}; ` +
				`the app user back to 0 DB connections after ${baseline.held}/${baseline.checked} invocations; partner sockets at most ${tally.socketsPeak} (connections: ${SETTINGS.exportConnections})`,
		],
	};
};
