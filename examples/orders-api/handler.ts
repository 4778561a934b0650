// Orders API: one Lambda function behind an API Gateway HTTP API (payload format 2.0).
//
//   POST /orders        validates the order, writes it and its lines in one transaction, then tells a partner's
//                       webhook about it in the background: delivered before Lambda freezes the process, without
//                       making the client wait for the partner.
//   GET  /orders/{id}   reads an order back, with its lines.
//
// The database connection is bound to the invocation (opened on first use, closed on every path: success,
// error, early timeout), so a warm instance never reads an earlier invocation's snapshot. The HTTP pool is warm:
// created once per execution environment and reused by every invocation it serves.
//
// Logs are structured JSON (Powertools Logger): the middlewares get the same logger, and injectLambdaContext adds
// the invocation's request id to every line, including their warnings and their per-invocation stats.

import { Logger } from "@aws-lambda-powertools/logger";
import { injectLambdaContext } from "@aws-lambda-powertools/logger/middleware";
import middy, { type MiddlewareObj } from "@middy/core";
import httpErrorHandler from "@middy/http-error-handler";
import httpJsonBodyParser from "@middy/http-json-body-parser";
import { createError } from "@middy/util";
import { httpPool } from "@middy-conn/http-pool";
import { mysqlConnection } from "@middy-conn/mysql";
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2 } from "aws-lambda";
import type { ResultSetHeader, RowDataPacket } from "mysql2";

// Configuration comes from the function's environment (template.yaml), read once per execution environment.
const required = (name: string): string => {
	const value = process.env[name];
	if (!value) throw new Error(`environment variable ${name} is not set`);
	return value;
};

const webhookPath = process.env.WEBHOOK_PATH ?? "/webhooks/orders";

// One logger for the handler and both middlewares. Service name and level come from POWERTOOLS_SERVICE_NAME and
// POWERTOOLS_LOG_LEVEL (template.yaml).
const logger = new Logger();

export interface OrderLine {
	sku: string;
	quantity: number;
	unitPriceCents: number;
}

export interface NewOrder {
	customerId: string;
	currency: string;
	lines: OrderLine[];
}

const badRequest = (message: string) =>
	// http-error-handler sends the message of an error below 500 as the body: JSON here, for API clients.
	createError(400, JSON.stringify({ message }));

const isInteger = (value: unknown, min: number, max: number): value is number =>
	Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max;

const isText = (value: unknown, maxLength: number): value is string =>
	typeof value === "string" && value.trim().length > 0 && value.length <= maxLength;

/** The order in the request body, or a 400 that names the first field that is wrong. */
export const parseOrder = (body: unknown): NewOrder => {
	if (typeof body === "string" || body === undefined) {
		throw badRequest("send the order as a JSON object, with Content-Type: application/json");
	}
	if (body === null || typeof body !== "object" || Array.isArray(body)) {
		throw badRequest("the body must be a JSON object");
	}
	const { customerId, currency, lines } = body as Record<string, unknown>;
	if (!isText(customerId, 64))
		throw badRequest("customerId must be a non-empty string of at most 64 characters");
	if (typeof currency !== "string" || !/^[A-Z]{3}$/.test(currency)) {
		throw badRequest("currency must be an ISO 4217 code such as EUR");
	}
	if (!Array.isArray(lines) || lines.length === 0 || lines.length > 100) {
		throw badRequest("lines must be an array of 1 to 100 order lines");
	}
	const parsed = lines.map((line: unknown, index): OrderLine => {
		const { sku, quantity, unitPriceCents } = (line ?? {}) as Record<string, unknown>;
		if (!isText(sku, 64))
			throw badRequest(`lines[${index}].sku must be a non-empty string of at most 64 characters`);
		if (!isInteger(quantity, 1, 10_000))
			throw badRequest(`lines[${index}].quantity must be an integer from 1 to 10000`);
		if (!isInteger(unitPriceCents, 0, 100_000_000)) {
			throw badRequest(`lines[${index}].unitPriceCents must be an integer from 0 to 100000000`);
		}
		return { sku, quantity, unitPriceCents };
	});
	return { customerId, currency, lines: parsed };
};

const json = (
	statusCode: number,
	value: unknown,
	headers: Record<string, string> = {},
): APIGatewayProxyResultV2 => ({
	statusCode,
	headers: { "content-type": "application/json", ...headers },
	body: JSON.stringify(value),
});

// A body that is not JSON is a bad request like any other: a 400 with a JSON message. Middy's parser says 422;
// this onError runs before http-error-handler's (used just after it), which then answers the 400.
const malformedJsonIsBadRequest: MiddlewareObj<APIGatewayProxyEventV2, APIGatewayProxyResultV2> = {
	onError: (request) => {
		const error = request.error as { statusCode?: number; cause?: { package?: string } } | undefined;
		if (error?.statusCode === 422 && error.cause?.package === "@middy/http-json-body-parser") {
			request.error = badRequest("the body is not valid JSON");
		}
	},
};

// Middy's early timeout fires 250 ms before Lambda's: time for the middlewares to stop what the handler left
// running (@middy-conn/mysql KILLs a statement still running on the server, over a new connection) and answer.
const middyOptions = { timeoutEarlyInMillis: 250 };

export const handler = middy<APIGatewayProxyEventV2, APIGatewayProxyResultV2>(middyOptions)
	// First: every line logged during the invocation (by the handler or a middleware) carries its request id.
	.use(injectLambdaContext(logger))
	// Outermost of the others: turns a thrown 4xx into its response, and anything else into a bare 500 (never a
	// stack trace). Only server-side failures are logged as errors: a client's mistake is answered, not alarmed on.
	.use(
		httpErrorHandler({
			fallbackMessage: JSON.stringify({ message: "internal error" }),
			logger: (error) => {
				const status = (error as { statusCode?: number }).statusCode ?? 500;
				if (status >= 500) logger.error("unhandled error", { error: error as Error });
			},
		}),
	)
	.use(malformedJsonIsBadRequest)
	// Parses JSON bodies; other content types are left as text, and parseOrder answers them with a clear 400.
	.use(httpJsonBodyParser({ disableContentTypeError: true }))
	.use(
		httpPool({
			origin: required("WEBHOOK_ORIGIN"),
			connections: 2,
			// Warnings (a webhook delivery that failed) and one `invocation stats` line per invocation, as JSON.
			logger,
			logStats: true,
		}),
	)
	.use(
		mysqlConnection({
			config: {
				host: required("DB_HOST"),
				port: Number(process.env.DB_PORT ?? 3306),
				user: required("DB_USER"),
				password: required("DB_PASSWORD"),
				database: required("DB_NAME"),
				// On RDS and Aurora: TLS, verified against the RDS certificate bundle.
				...(process.env.DB_TLS === "rds" ? { ssl: "rds" as const } : {}),
			},
			logger,
			logStats: true,
		}),
	)
	.handler(async (event, context) => {
		switch (event.routeKey) {
			case "POST /orders": {
				const body: unknown = event.body;
				const order = parseOrder(body);
				const totalCents = order.lines.reduce((sum, line) => sum + line.quantity * line.unitPriceCents, 0);

				// One transaction for the order and its lines. If anything throws before the commit, the middleware
				// ends the connection, and the server rolls the transaction back: no half-written order.
				await context.db.beginTransaction();
				const [inserted] = await context.db.query<ResultSetHeader>(
					"INSERT INTO orders (customer_id, currency, total_cents) VALUES (?, ?, ?)",
					[order.customerId, order.currency, totalCents],
				);
				const orderId = inserted.insertId;
				// `query` with placeholders (escaped by the driver): no server-side prepared statement, which would
				// pin the connection behind RDS Proxy. `VALUES ?` takes all the lines in one round trip.
				await context.db.query(
					"INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) VALUES ?",
					[
						order.lines.map((line, index) => [
							orderId,
							index + 1,
							line.sku,
							line.quantity,
							line.unitPriceCents,
						]),
					],
				);
				await context.db.commit();

				// After the commit, so the partner never hears of an order that is not there. Not awaited here: the
				// client gets its 201 without waiting for the partner, and the middleware awaits the delivery before
				// the invocation ends (a request still in flight when Lambda freezes is lost).
				context.waitUntil(
					context.http
						.request({
							path: webhookPath,
							method: "POST",
							headers: { "content-type": "application/json", "idempotency-key": `order-${orderId}` },
							body: JSON.stringify({
								type: "order.created",
								orderId,
								customerId: order.customerId,
								totalCents,
							}),
							// The partner deduplicates on the idempotency key, so a POST that met a connection closed during
							// a freeze may be sent again on a new one.
							idempotent: true,
						})
						.then(async ({ statusCode, body }) => {
							await body.dump();
							if (statusCode >= 300) throw new Error(`webhook answered ${statusCode} for order ${orderId}`);
						}),
				);
				return json(201, { id: orderId, totalCents }, { location: `/orders/${orderId}` });
			}
			case "GET /orders/{id}": {
				const id = event.pathParameters?.id ?? "";
				if (!/^[1-9][0-9]{0,17}$/.test(id)) throw badRequest("the order id must be a positive integer");
				const [orders] = await context.db.query<RowDataPacket[]>(
					"SELECT id, customer_id AS customerId, currency, total_cents AS totalCents, created_at AS createdAt FROM orders WHERE id = ?",
					[id],
				);
				const found = orders[0];
				if (!found) throw createError(404, JSON.stringify({ message: `order ${id} not found` }));
				const [lines] = await context.db.query<RowDataPacket[]>(
					"SELECT sku, quantity, unit_price_cents AS unitPriceCents FROM order_lines WHERE order_id = ? ORDER BY line_no",
					[id],
				);
				return json(200, { ...found, lines });
			}
			default:
				// A REST API (or payload format 1.0) event has no routeKey: the integration is not the one this expects.
				if (typeof event.routeKey !== "string") {
					throw badRequest("expected an API Gateway HTTP API event, payload format 2.0");
				}
				throw createError(404, JSON.stringify({ message: `no route for ${event.routeKey}` }));
		}
	});
