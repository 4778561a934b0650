// orders-api (scoped connection, a warm HTTP pool of 2, a webhook sent with context.waitUntil): POSTs with a unique
// customer id each, reads back of orders it created, and malformed requests.
//
// After each step: the app user's connections are back at 0, and the partner never had more sockets open than the
// pool's `connections`. For each POST, the order that the caller's answer implies is (or is not) in the database,
// and every order in the database had its webhook delivered before the invocation returned, or reported failed.
// At the end: no order twice, no order of a failed invocation, no marker row of a rolled-back transaction, no
// webhook for an order nobody was told of.

import {
	AUDIT_PATH,
	httpApiEvent,
	type InvocationOutcome,
	ORDERS_WEBHOOK_PATH,
} from "@middy-conn/test-harness";
import type { APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import type { RowDataPacket } from "mysql2/promise";
import { sleepMarker } from "../directive.ts";
import { classifyHttpAnswer } from "../invariants.ts";
import {
	type BackgroundTask,
	backgroundTask,
	checkMarkerLanded,
	checkScopedBaseline,
	checkSockets,
	type Driver,
	defaultExpected,
	directiveOf,
	earlyResponseFaults,
	integer,
	killWhenRunning,
	mustDeliver,
	partnerFaultsWhileFrozen,
	pick,
	queryFault,
	reconcileTasks,
	reportVisibleMarkers,
	SETTINGS,
	SKUS,
	type SoakContext,
} from "./common.ts";

interface OrderRecord {
	customerId: string;
	requestId: string;
	row: BackgroundTask["row"];
	/** What the caller's answer implies about the database. */
	expect: "committed" | "absent" | "maybe";
}

const anOrder = (next: () => number, customerId: string) => ({
	customerId,
	currency: "EUR",
	lines: Array.from({ length: integer(next, 1, 3) }, () => ({
		sku: pick(next, SKUS),
		quantity: integer(next, 1, 5),
		unitPriceCents: integer(next, 100, 2000),
	})),
});

const postOrder = (body: unknown, headers?: Record<string, string>) =>
	httpApiEvent({
		method: "POST",
		path: "/orders",
		routeKey: "POST /orders",
		body,
		...(headers ? { headers } : {}),
	});

/** Requests orders-api does not expect: each must get a 4xx that says what is wrong. */
const malformedOrders = (customerId: string) => [
	postOrder("customer=7", { "content-type": "application/x-www-form-urlencoded" }),
	httpApiEvent({
		method: "POST",
		path: "/orders",
		routeKey: "POST /orders",
		headers: { "content-type": "application/json" },
		body: `{"customerId": "${customerId}",`,
	}),
	postOrder([{ customerId, currency: "EUR", lines: [] }]),
	postOrder({ customerId, currency: "EUR" }),
	postOrder({
		customerId,
		currency: "EUR",
		lines: [{ sku: "MUG-WHITE", quantity: -1, unitPriceCents: 100 }],
	}),
	httpApiEvent({
		method: "GET",
		path: "/orders/abc",
		routeKey: "GET /orders/{id}",
		pathParameters: { id: "abc" },
	}),
	httpApiEvent({
		method: "DELETE",
		path: "/orders/1",
		routeKey: "DELETE /orders/{id}",
		pathParameters: { id: "1" },
	}),
	// The wrong payload format: a REST API (or HTTP API payload 1.0) event.
	{ version: "1.0", resource: "/orders", path: "/orders", httpMethod: "POST", headers: {}, body: "{}" },
];

export const ordersApi = (context: SoakContext): Driver => {
	const partner = context.partners.orders;
	const { user, database } = context.users.orders;
	const orders: OrderRecord[] = [];
	const tasks: BackgroundTask[] = [];
	/** Orders this function answered 201 for, to read back. */
	const created: number[] = [];
	const kills = { landed: 0, missed: 0 };
	const reads = { fresh: 0, total: 0 };
	const baseline = { checked: 0, held: 0 };
	const webhooks = { delivered: 0, reported: 0 };
	const audits = { delivered: 0, reported: 0, answerLost: 0 };

	const idsOf = async (customerId: string) =>
		(
			await context
				.admin()
				.query<RowDataPacket[]>(`SELECT id FROM \`${database}\`.orders WHERE customer_id = ?`, [customerId])
		).map((row) => Number(row.id));

	return {
		fn: "orders-api",
		async prepare(run) {
			const fault = run.step.fault;
			const customerId = `c-${run.token}`;
			const { sleepSeconds, timeoutMs: queryTimeoutMs } = queryFault(run);
			let timeoutMs: number | undefined = queryTimeoutMs;
			let event: unknown;
			let kind: "post" | "get" | "malformed" = "post";
			if (fault === "malformed-event") {
				kind = "malformed";
				event = pick(run.next, malformedOrders(customerId));
			} else if (fault === undefined && created.length > 0 && run.next() < 0.3) {
				kind = "get";
				const recent = Math.floor(run.next() * Math.min(created.length, 20));
				const id = created[created.length - 1 - recent] as number;
				event = httpApiEvent({
					method: "GET",
					path: `/orders/${id}`,
					routeKey: "GET /orders/{id}",
					pathParameters: { id: String(id) },
				});
			} else {
				const order = anOrder(run.next, customerId);
				// A rule the database enforces (soak schema: CHECK sku <> 'RECALLED') fails the lines' INSERT inside the
				// handler's transaction, after the order row was written.
				if (fault === "handler-throws")
					order.lines.push({ sku: "RECALLED", quantity: 1, unitPriceCents: 100 });
				event = postOrder(order);
			}
			partner.clearFaults();
			await partnerFaultsWhileFrozen(run, partner, (kind) => partner.failNext(ORDERS_WEBHOOK_PATH, { kind }));
			earlyResponseFaults(run, partner);
			if (fault === "partner-slow-body") {
				partner.failNext(ORDERS_WEBHOOK_PATH, { kind: "slow-body", ms: SETTINGS.bodyTimeoutMs * 3 });
			}
			if (fault === "timeout-http") {
				partner.failNext(ORDERS_WEBHOOK_PATH, { kind: "slow", ms: SETTINGS.ordersSlowWebhookMs });
				timeoutMs = SETTINGS.ordersTimeoutMs;
			}
			const answerOf = (outcome: InvocationOutcome) =>
				outcome.result as APIGatewayProxyStructuredResultV2 | undefined;
			return {
				event,
				directive: directiveOf(run, sleepSeconds),
				...(timeoutMs === undefined ? {} : { timeoutMs }),
				...(fault === "kill-query"
					? { during: killWhenRunning(context, user, sleepMarker("kill-query", run.token), kills) }
					: {}),
				// An HTTP API answers every request: an invocation error would reach the client as API Gateway's 500.
				classify: (outcome) =>
					outcome.ok
						? classifyHttpAnswer(answerOf(outcome) as { statusCode: number; body: string } | undefined)
						: "unclear",
				expected: (_outcome, result) => {
					if (kind === "malformed") return result === "answered 4xx";
					if (result === "answered 4xx") return false;
					return defaultExpected(run, result);
				},
				async check(outcome) {
					const answer = answerOf(outcome);
					const status = answer?.statusCode ?? 0;
					if (kind === "get") {
						reads.total++;
						const body = JSON.parse(String(answer?.body ?? "null")) as { lines?: unknown[] } | null;
						if (status === 200 && (body?.lines?.length ?? 0) > 0) reads.fresh++;
						else if (!(run.afterRestart && status === 500)) {
							context.ledger.violation(
								"leak",
								run.row,
								"orders-api",
								`an order this function had committed was answered ${status}: a stale read`,
							);
						}
					}
					if (kind === "post") {
						let expect: OrderRecord["expect"] = "maybe";
						if (status === 201) {
							expect = "committed";
							created.push((JSON.parse(String(answer?.body)) as { id: number }).id);
						} else if (fault === "after-throws" && status === 500 && !run.afterRestart) {
							// The handler committed; the `after` that threw came later. (With a DB restart during the
							// invocation, the 500 may be the handler's own failure: then either outcome is possible.)
							expect = "committed";
						} else if (status >= 400 && status < 500) expect = "absent";
						else if (fault === "handler-throws" || fault === "timeout-query" || fault === "kill-query") {
							expect = "absent";
						} else if (fault === "early-response" || fault === "early-background") expect = "absent";
						orders.push({ customerId, requestId: run.requestId, row: run.row, expect });
						// Every order that exists now had its webhook delivered by now (the process is frozen), or reported.
						if (expect !== "absent") {
							for (const id of await idsOf(customerId)) {
								tasks.push(
									backgroundTask(partner, {
										label: `webhook of order ${id}`,
										path: ORDERS_WEBHOOK_PATH,
										key: `order-${id}`,
										requestId: run.requestId,
										row: run.row,
										idempotent: true,
									}),
								);
							}
						}
					}
					if (fault === "early-background")
						await checkMarkerLanded(context, run, "orders-api", database, outcome);
					// The POST exists once the `before` got that far (a DB restart can fail it before): the early answer
					// came back, or the partner saw the POST.
					if (
						fault === "early-response" &&
						(status === 202 || partner.received(AUDIT_PATH).has(`early-${run.token}`))
					) {
						tasks.push(
							backgroundTask(partner, {
								label: `the early response's background POST early-${run.token}`,
								path: AUDIT_PATH,
								key: `early-${run.token}`,
								requestId: run.requestId,
								row: run.row,
								idempotent: false,
							}),
						);
					}
					baseline.checked++;
					if (await checkScopedBaseline(context, run, "orders-api", user)) baseline.held++;
					checkSockets(context, run, "orders-api", partner, SETTINGS.ordersConnections);
				},
			};
		},
		async reconcile() {
			const rows = await context
				.admin()
				.query<RowDataPacket[]>(`SELECT id, customer_id AS customerId FROM \`${database}\`.orders`);
			const byCustomer = new Map<string, number[]>();
			for (const row of rows) {
				byCustomer.set(row.customerId, [...(byCustomer.get(row.customerId) ?? []), Number(row.id)]);
			}
			const announced = new Set(tasks.map((task) => task.key));
			for (const order of orders) {
				const ids = byCustomer.get(order.customerId) ?? [];
				if (ids.length > 1) {
					context.ledger.violation(
						"duplicated",
						order.row,
						"orders-api",
						`the order of ${order.customerId} was written ${ids.length} times`,
					);
				}
				if (order.expect === "committed" && ids.length === 0) {
					context.ledger.violation(
						"lost",
						order.row,
						"orders-api",
						`the order of ${order.customerId} was confirmed to its caller but is not in the database`,
					);
				}
				if (order.expect === "absent" && ids.length > 0) {
					context.ledger.violation(
						"leak",
						order.row,
						"orders-api",
						`the order of ${order.customerId} is in the database although its invocation failed before COMMIT`,
					);
				}
				// Committed after its step was checked (its outcome was unknown then): its webhook is reckoned now.
				for (const id of ids) {
					if (announced.has(`order-${id}`)) continue;
					tasks.push({
						label: `webhook of order ${id}`,
						path: ORDERS_WEBHOOK_PATH,
						key: `order-${id}`,
						requestId: order.requestId,
						row: order.row,
						idempotent: true,
						processedAtReturn: undefined,
					});
				}
			}
			const ours = new Set(rows.map((row) => `order-${row.id}`));
			for (const key of partner.accepted(ORDERS_WEBHOOK_PATH).keys()) {
				if (!ours.has(key)) {
					context.ledger.violation(
						"leak",
						"none",
						"orders-api",
						`the partner heard of ${key}, which is not in the database`,
					);
				}
			}
			await reportVisibleMarkers(context, "orders-api", "order", `\`${database}\`.orders`, "customer_id");
			reconcileTasks(
				context,
				"orders-api",
				partner,
				tasks.filter((task) => task.path === ORDERS_WEBHOOK_PATH),
				webhooks,
				// Idempotent, with a key: a webhook must get through everything but a deadline it cannot meet.
				(row) => !mustDeliver(row),
			);
			reconcileTasks(
				context,
				"orders-api",
				partner,
				tasks.filter((task) => task.path === AUDIT_PATH),
				audits,
			);
		},
		figures: () => [
			`orders-api (scoped): the app user back to 0 DB connections after ${baseline.held}/${baseline.checked} invocations; ` +
				`${reads.fresh}/${reads.total} orders read back fresh; webhooks ${webhooks.delivered} delivered before their invocation returned, ${webhooks.reported} reported failed, ${[...partner.unanswered(ORDERS_WEBHOOK_PATH).values()].reduce((sum, n) => sum + n, 0)} replayed after the partner's answer was lost (idempotency key); ` +
				`early responses' unkeyed POSTs ${audits.delivered} delivered (${audits.answerLost} of them after the partner lost its answer, and never sent again), ${audits.reported} reported failed; ` +
				`partner sockets at most ${partner.peakOpenAtRequest} (connections: ${SETTINGS.ordersConnections}); KILLs ${kills.landed} landed, ${kills.missed} missed`,
		],
	};
};
