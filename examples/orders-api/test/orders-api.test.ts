import { fileURLToPath } from "node:url";
import { applySqlFile, databaseEnvironment, httpApiEvent, invokeInProcess } from "@middy-conn/test-harness";
import { useHttpServer, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { APIGatewayProxyResultV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import type { RowDataPacket } from "mysql2";
import { afterEach, beforeAll, describe, expect, it } from "vitest";

const schema = fileURLToPath(new URL("../schema.sql", import.meta.url));

const { admin, db } = useTestDatabase("orders_api", { seed: (_admin, db) => applySqlFile(db, schema) });
const partner = useHttpServer({
	routes: {
		"/webhooks/orders": (_request, response) => {
			response.writeHead(202).end();
		},
	},
	resetStats: false,
});
let handler: unknown;

const call = async (event: Parameters<typeof httpApiEvent>[0]) => {
	const response = await invokeInProcess<APIGatewayProxyResultV2>(handler, httpApiEvent(event));
	const structured = response as APIGatewayProxyStructuredResultV2;
	const isJson = String(
		structured.headers?.["content-type"] ?? structured.headers?.["Content-Type"],
	).includes("json");
	return { ...structured, json: isJson && structured.body ? JSON.parse(structured.body) : undefined };
};

const postOrder = (body: unknown, headers?: Record<string, string>) =>
	call({ method: "POST", path: "/orders", routeKey: "POST /orders", body, ...(headers ? { headers } : {}) });

const getOrder = (id: string) =>
	call({ method: "GET", path: `/orders/${id}`, routeKey: "GET /orders/{id}", pathParameters: { id } });

const anOrder = {
	customerId: "customer-7",
	currency: "EUR",
	lines: [
		{ sku: "TEA-GREEN-100G", quantity: 2, unitPriceCents: 450 },
		{ sku: "MUG-WHITE", quantity: 1, unitPriceCents: 1200 },
	],
};

const ordersOf = async (customerId: string) =>
	admin.query<RowDataPacket[]>(`SELECT id FROM \`${db.database}\`.orders WHERE customer_id = ?`, [
		customerId,
	]);

beforeAll(async () => {
	// The function's configuration, as template.yaml sets it; the handler reads it when it is loaded (cold start).
	Object.assign(process.env, {
		...databaseEnvironment(db),
		WEBHOOK_ORIGIN: partner.origin,
		WEBHOOK_PATH: "/webhooks/orders",
		// The stats lines (JSON, one per middleware per invocation) are checked by bundle.test.ts; not printed here.
		POWERTOOLS_LOG_LEVEL: "WARN",
	});
	({ handler } = await import("../handler.ts"));
});

afterEach(async () => {
	// Every invocation, whatever its outcome, has closed its database connection by the time it returned.
	expect(await admin.settleConnections(db.user, 0)).toBe(0);
});

describe("orders-api: POST /orders", () => {
	it("stores the order with its lines and answers 201 with the order's id and total", async () => {
		const response = await postOrder(anOrder);
		expect(response.statusCode).toBe(201);
		expect(response.json).toEqual({ id: expect.any(Number), totalCents: 2100 });
		expect(response.headers?.location).toBe(`/orders/${response.json.id}`);
		const lines = await admin.query<RowDataPacket[]>(
			`SELECT line_no, sku, quantity, unit_price_cents FROM \`${db.database}\`.order_lines WHERE order_id = ? ORDER BY line_no`,
			[response.json.id],
		);
		expect(lines.map((line) => ({ ...line }))).toEqual([
			{ line_no: 1, sku: "TEA-GREEN-100G", quantity: 2, unit_price_cents: 450 },
			{ line_no: 2, sku: "MUG-WHITE", quantity: 1, unit_price_cents: 1200 },
		]);
	});

	it("has delivered the partner's webhook by the time the invocation returns, with an idempotency key", async () => {
		const response = await postOrder({ ...anOrder, customerId: "customer-webhook" });
		// No waiting here: Lambda freezes the process as soon as the handler returns, so the webhook must be there.
		const webhooks = partner.received.filter(
			(request) => request.path === "/webhooks/orders" && request.body.includes("customer-webhook"),
		);
		expect(webhooks).toHaveLength(1);
		expect(JSON.parse(webhooks[0]?.body ?? "")).toEqual({
			type: "order.created",
			orderId: response.json.id,
			customerId: "customer-webhook",
			totalCents: 2100,
		});
		expect(webhooks[0]?.headers["idempotency-key"]).toBe(`order-${response.json.id}`);
	});

	it("writes nothing and notifies nobody when a line cannot be stored (one transaction)", async () => {
		// A rule the database enforces and the handler does not know about: the second line's insert fails.
		await admin.query(
			`ALTER TABLE \`${db.database}\`.order_lines ADD CONSTRAINT no_recalled_sku CHECK (sku <> 'RECALLED')`,
		);
		try {
			const before = partner.receivedCount("POST", "/webhooks/orders");
			const response = await postOrder({
				customerId: "customer-recall",
				currency: "EUR",
				lines: [{ sku: "RECALLED", quantity: 1, unitPriceCents: 100 }],
			});
			expect(response.statusCode).toBe(500);
			expect(response.json).toEqual({ message: "internal error" });
			expect(await ordersOf("customer-recall")).toHaveLength(0);
			expect(partner.receivedCount("POST", "/webhooks/orders")).toBe(before);
		} finally {
			await admin.query(`ALTER TABLE \`${db.database}\`.order_lines DROP CONSTRAINT no_recalled_sku`);
		}
	});

	it("reuses its warm connection to the partner across invocations", async () => {
		partner.resetStats();
		for (let i = 0; i < 5; i++) expect((await postOrder(anOrder)).statusCode).toBe(201);
		expect(partner.receivedCount("POST", "/webhooks/orders")).toBe(5);
		// Five webhooks, and never more new TCP connections than the pool's size (handler.ts: connections: 2).
		expect(partner.stats.connections).toBeLessThanOrEqual(2);
	});
});

describe("orders-api: a bad body gets a clear 4xx, and never a stack trace", () => {
	it.each([
		[
			"a body that is not JSON",
			"customer=7",
			{ "content-type": "application/x-www-form-urlencoded" },
			/as a JSON object/,
		],
		["a JSON array", [anOrder], undefined, /must be a JSON object/],
		[
			"no customer",
			{ ...anOrder, customerId: undefined },
			undefined,
			/customerId must be a non-empty string/,
		],
		[
			"a currency that is not ISO 4217",
			{ ...anOrder, currency: "euro" },
			undefined,
			/currency must be an ISO 4217 code/,
		],
		["no lines", { ...anOrder, lines: [] }, undefined, /lines must be an array of 1 to 100/],
		[
			"a quantity of zero",
			{ ...anOrder, lines: [{ sku: "A", quantity: 0, unitPriceCents: 1 }] },
			undefined,
			/lines\[0\]\.quantity must be an integer from 1 to 10000/,
		],
		[
			"a negative price",
			{ ...anOrder, lines: [anOrder.lines[0], { sku: "B", quantity: 1, unitPriceCents: -5 }] },
			undefined,
			/lines\[1\]\.unitPriceCents must be an integer/,
		],
	])("400 for %s", async (_case, body, headers, message) => {
		const before = partner.receivedCount("POST", "/webhooks/orders");
		const response = await postOrder(body, headers);
		expect(response.statusCode).toBe(400);
		expect(response.json.message).toMatch(message);
		expect(response.body).not.toMatch(/\n\s+at /);
		expect(partner.receivedCount("POST", "/webhooks/orders")).toBe(before);
	});

	it("400 for malformed JSON, with a JSON message", async () => {
		const response = await call({
			method: "POST",
			path: "/orders",
			routeKey: "POST /orders",
			headers: { "content-type": "application/json" },
			body: '{"customerId": "customer-7",',
		});
		expect(response.statusCode).toBe(400);
		expect(JSON.parse(String(response.body))).toEqual({ message: "the body is not valid JSON" });
	});
});

describe("orders-api: GET /orders/{id}", () => {
	it("reads the order back with its lines", async () => {
		const created = await postOrder({ ...anOrder, customerId: "customer-read" });
		const response = await getOrder(String(created.json.id));
		expect(response.statusCode).toBe(200);
		expect(response.json).toMatchObject({
			id: created.json.id,
			customerId: "customer-read",
			currency: "EUR",
			totalCents: 2100,
			lines: [
				{ sku: "TEA-GREEN-100G", quantity: 2, unitPriceCents: 450 },
				{ sku: "MUG-WHITE", quantity: 1, unitPriceCents: 1200 },
			],
		});
	});

	it("answers 404 for an order that does not exist, and 400 for an id that is not one", async () => {
		expect(await getOrder("999999999")).toMatchObject({
			statusCode: 404,
			json: { message: "order 999999999 not found" },
		});
		expect(await getOrder("abc")).toMatchObject({
			statusCode: 400,
			json: { message: "the order id must be a positive integer" },
		});
	});
});
