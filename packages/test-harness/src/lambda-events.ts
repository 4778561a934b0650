// Lambda-shaped events and contexts, for tests that call a handler in-process and for the execution-environment
// runner. Only the fields a handler reads are filled in, with the values Lambda itself would send.
import { randomUUID } from "node:crypto";
import type { APIGatewayProxyEventV2, Context, SQSEvent, SQSRecord } from "aws-lambda";

export interface LambdaContextOptions {
	functionName?: string;
	/** The function's configured timeout; the deadline is now + this. Default 10 s. */
	timeoutMs?: number;
	/** An absolute deadline (ms since the epoch) instead of `timeoutMs`. */
	deadlineMs?: number;
	awsRequestId?: string;
	memoryLimitInMB?: number;
}

/**
 * A context like the one the Node runtime passes: `getRemainingTimeInMillis()` counts down to the deadline, which
 * is what Middy's early timeout and the middlewares' background-work deadline read.
 */
export const createLambdaContext = (options: LambdaContextOptions = {}): Context => {
	const functionName = options.functionName ?? "example-function";
	const deadlineMs = options.deadlineMs ?? Date.now() + (options.timeoutMs ?? 10_000);
	const region = "eu-west-1";
	return {
		callbackWaitsForEmptyEventLoop: true,
		functionName,
		functionVersion: "$LATEST",
		invokedFunctionArn: `arn:aws:lambda:${region}:123456789012:function:${functionName}`,
		memoryLimitInMB: String(options.memoryLimitInMB ?? 1024),
		awsRequestId: options.awsRequestId ?? randomUUID(),
		logGroupName: `/aws/lambda/${functionName}`,
		logStreamName: `2026/11/22/[$LATEST]${randomUUID().replaceAll("-", "")}`,
		getRemainingTimeInMillis: () => Math.max(0, deadlineMs - Date.now()),
		// The callback-style helpers are gone from the Node 24 runtime; they throw if a handler reaches for them.
		done: () => {
			throw new Error("context.done is not supported by the nodejs24.x runtime");
		},
		fail: () => {
			throw new Error("context.fail is not supported by the nodejs24.x runtime");
		},
		succeed: () => {
			throw new Error("context.succeed is not supported by the nodejs24.x runtime");
		},
	};
};

export interface HttpApiEventOptions {
	/** e.g. "POST" */
	method: string;
	/** The request path, e.g. "/orders/42". */
	path: string;
	/** The route that matched, e.g. "GET /orders/{id}"; default `${method} ${path}`. */
	routeKey?: string;
	pathParameters?: Record<string, string>;
	queryStringParameters?: Record<string, string>;
	headers?: Record<string, string>;
	/** A string is sent as is; anything else is JSON-encoded with a JSON content type. */
	body?: unknown;
}

/** An API Gateway HTTP API event, payload format 2.0 (headers lowercased, as API Gateway sends them). */
export const httpApiEvent = (options: HttpApiEventOptions): APIGatewayProxyEventV2 => {
	const headers: Record<string, string> = {};
	for (const [name, value] of Object.entries(options.headers ?? {})) headers[name.toLowerCase()] = value;
	let body: string | undefined;
	if (typeof options.body === "string") body = options.body;
	else if (options.body !== undefined) {
		body = JSON.stringify(options.body);
		headers["content-type"] ??= "application/json";
	}
	const query = options.queryStringParameters;
	const rawQueryString = query ? new URLSearchParams(query).toString() : "";
	const now = new Date();
	return {
		version: "2.0",
		routeKey: options.routeKey ?? `${options.method} ${options.path}`,
		rawPath: options.path,
		rawQueryString,
		headers,
		...(query ? { queryStringParameters: query } : {}),
		...(options.pathParameters ? { pathParameters: options.pathParameters } : {}),
		requestContext: {
			accountId: "123456789012",
			apiId: "example",
			domainName: "example.execute-api.eu-west-1.amazonaws.com",
			domainPrefix: "example",
			http: {
				method: options.method,
				path: options.path,
				protocol: "HTTP/1.1",
				sourceIp: "203.0.113.7",
				userAgent: "middy-conn-test",
			},
			requestId: randomUUID(),
			routeKey: options.routeKey ?? `${options.method} ${options.path}`,
			stage: "$default",
			time: now.toUTCString(),
			timeEpoch: now.getTime(),
		},
		...(body === undefined ? {} : { body }),
		isBase64Encoded: false,
	};
};

export interface SqsMessage {
	/** Default: a random UUID, as SQS assigns. */
	messageId?: string;
	/** A string is sent as is; anything else is JSON-encoded. */
	body: unknown;
	/** How many times SQS has delivered it, this time included. Default 1. */
	receiveCount?: number;
}

/** An SQS event as the Lambda event source mapping delivers a batch. */
export const sqsEvent = (messages: SqsMessage[], queueName = "example-queue"): SQSEvent => ({
	Records: messages.map(
		(message): SQSRecord => ({
			messageId: message.messageId ?? randomUUID(),
			receiptHandle: `receipt-${randomUUID()}`,
			body: typeof message.body === "string" ? message.body : JSON.stringify(message.body),
			attributes: {
				ApproximateReceiveCount: String(message.receiveCount ?? 1),
				SentTimestamp: String(Date.now()),
				SenderId: "AIDAEXAMPLE",
				ApproximateFirstReceiveTimestamp: String(Date.now()),
			},
			messageAttributes: {},
			md5OfBody: "",
			eventSource: "aws:sqs",
			eventSourceARN: `arn:aws:sqs:eu-west-1:123456789012:${queueName}`,
			awsRegion: "eu-west-1",
		}),
	),
});

/**
 * Calls a Middy handler in this process as the Node runtime would, with a fresh Lambda-like context. Handlers
 * typed by their middlewares (`context.db`, `context.http`) expect a context that already has those fields; the
 * middlewares add them, so the call goes through a plain function type.
 */
export const invokeInProcess = <TResult = unknown>(
	handler: unknown,
	event: unknown,
	context: LambdaContextOptions = {},
): Promise<TResult> =>
	(handler as (event: unknown, context: Context) => Promise<TResult>)(event, createLambdaContext(context));
