// webhook-relay (an SQS batch consumer, a warm HTTP pool of RELAY_CONCURRENCY connections): batches of records with
// unique message ids, and events that are not what it expects.
//
// Each record is delivered exactly once, or reported failed (a batch item failure, or the whole batch when the
// invocation fails: SQS delivers it again, and the partner deduplicates on the key); a record whose body is not
// JSON is never sent. The partner never has more sockets open than the pool's `connections`.

import { AUDIT_PATH, RELAY_EVENTS_PATH, sqsEvent } from "@middy-conn/test-harness";
import type { SQSBatchResponse } from "aws-lambda";
import type { Row } from "../invariants.ts";
import {
	type BackgroundTask,
	backgroundTask,
	checkSockets,
	classifyFunctionError,
	type Driver,
	defaultExpected,
	directiveOf,
	earlyResponseFaults,
	integer,
	mustDeliver,
	partnerFaultsWhileFrozen,
	pick,
	reconcileTasks,
	SETTINGS,
	SKUS,
	type SoakContext,
} from "./common.ts";

interface RelayRecord {
	key: string;
	requestId: string;
	row: Row;
	reportedFailed: boolean;
	/** Never sent (a body that is not JSON): must be reported failed and never reach the partner. */
	unsendable: boolean;
}

export const webhookRelay = (context: SoakContext): Driver => {
	const partner = context.partners.relay;
	const records: RelayRecord[] = [];
	const audits: BackgroundTask[] = [];
	const auditTally = { delivered: 0, reported: 0, answerLost: 0 };
	const tally = { delivered: 0, reported: 0, ambiguous: 0, replayed: 0 };

	return {
		fn: "webhook-relay",
		async prepare(run) {
			const fault = run.step.fault;
			let timeoutMs: number | undefined;
			const messages = Array.from({ length: integer(run.next, 1, 6) }, (_, i) => ({
				messageId: `m-${run.token}-${i}`,
				body: { type: "stock.changed", sku: pick(run.next, SKUS), n: i } as unknown,
			}));
			let event: unknown = sqsEvent(messages);
			let notSqs = false;
			const unsendable = new Set<string>();
			if (fault === "malformed-event") {
				if (run.next() < 0.5) {
					const broken = messages[0] as { messageId: string; body: unknown };
					broken.body = "this is not JSON";
					unsendable.add(broken.messageId);
					event = sqsEvent(messages);
				} else {
					// Not an SQS batch at all (a misconfigured trigger, a test event).
					event = { source: "aws.events", "detail-type": "Scheduled Event", detail: {} };
					notSqs = true;
				}
			}
			const first = (messages[0] as { messageId: string }).messageId;
			partner.clearFaults();
			await partnerFaultsWhileFrozen(run, partner, (kind) => partner.failKey(first, { kind }));
			earlyResponseFaults(run, partner);
			if (fault === "partner-slow-body")
				partner.failKey(first, { kind: "slow-body", ms: SETTINGS.bodyTimeoutMs * 3 });
			if (fault === "timeout-http") {
				partner.failKey(first, { kind: "slow", ms: SETTINGS.relaySlowMs });
				timeoutMs = SETTINGS.relayTimeoutMs;
			}
			return {
				event,
				directive: directiveOf(run),
				...(timeoutMs === undefined ? {} : { timeoutMs }),
				classify: classifyFunctionError,
				expected: (_outcome, result) => {
					if (fault === "malformed-event") return notSqs ? result === "clear error" : result === "succeeded";
					return defaultExpected(run, result);
				},
				async check(outcome) {
					if (!notSqs) {
						const response = outcome.result as SQSBatchResponse | undefined;
						const failed = new Set(response?.batchItemFailures?.map((failure) => failure.itemIdentifier));
						for (const message of messages) {
							records.push({
								key: message.messageId,
								requestId: run.requestId,
								row: run.row,
								// A failed invocation fails the whole batch: SQS delivers every record again.
								reportedFailed: !outcome.ok || failed.has(message.messageId),
								unsendable: unsendable.has(message.messageId),
							});
						}
					}
					// The POST exists once the `before` got that far: the early answer came back, or the partner saw it.
					if (
						fault === "early-response" &&
						(outcome.ok || partner.received(AUDIT_PATH).has(`early-${run.token}`))
					)
						audits.push(
							backgroundTask(partner, {
								label: `the early response's background POST early-${run.token}`,
								path: AUDIT_PATH,
								key: `early-${run.token}`,
								requestId: run.requestId,
								row: run.row,
								idempotent: false,
							}),
						);
					checkSockets(context, run, "webhook-relay", partner, SETTINGS.relayConcurrency);
				},
			};
		},
		async reconcile() {
			const accepted = partner.accepted(RELAY_EVENTS_PATH);
			const unanswered = partner.unanswered(RELAY_EVENTS_PATH);
			for (const record of records) {
				const processed = accepted.get(record.key) ?? 0;
				// Sent with its message id as idempotency key: a replay after a lost answer is by design.
				const replays = unanswered.get(record.key) ?? 0;
				tally.replayed += replays;
				if (processed > 1 + replays) {
					context.ledger.violation(
						"duplicated",
						record.row,
						"webhook-relay",
						`record ${record.key} processed ${processed} times (${replays} answer(s) lost)`,
					);
				} else if (record.unsendable && (processed > 0 || !record.reportedFailed)) {
					context.ledger.violation(
						"unexpected",
						record.row,
						"webhook-relay",
						`record ${record.key}, whose body is not JSON, was ${processed > 0 ? "sent" : "not reported failed"}`,
					);
				} else if (processed >= 1 && !record.reportedFailed) {
					tally.delivered++;
					context.ledger.task(record.row, "delivered");
				} else if (record.reportedFailed) {
					tally.reported++;
					if (processed >= 1) tally.ambiguous++;
					context.ledger.task(record.row, "reported failed");
					if (mustDeliver(record.row)) {
						context.ledger.violation(
							"unexpected",
							record.row,
							"webhook-relay",
							`record ${record.key} was reported failed, and nothing explains it`,
						);
					}
				} else {
					context.ledger.violation(
						"lost",
						record.row,
						"webhook-relay",
						`record ${record.key} neither delivered nor reported failed`,
					);
				}
			}
			reconcileTasks(context, "webhook-relay", partner, audits, auditTally);
		},
		figures: () => [
			`webhook-relay: records ${tally.delivered} delivered, ${tally.reported} reported failed to SQS (${tally.ambiguous} of them had reached the partner: SQS redelivers, the partner deduplicates on the key), ` +
				`${tally.replayed} replayed after the partner's answer was lost (message id as idempotency key); early responses' unkeyed POSTs ${auditTally.delivered} delivered (${auditTally.answerLost} of them after the partner lost its answer, and never sent again), ${auditTally.reported} reported failed; ` +
				`partner sockets at most ${partner.peakOpenAtRequest} (connections: ${SETTINGS.relayConcurrency})`,
		],
	};
};
