// What the Lambda runtime hands a handler: a fresh context per invocation with a deadline. Middy arms its early
// timeout only when `getRemainingTimeInMillis` exists, so every contender pays that cost, as on Lambda.
import type { Context } from "aws-lambda";

let invocations = 0;

export const lambdaContext = (timeoutMs = 30_000): Context => {
	const deadline = Date.now() + timeoutMs;
	invocations++;
	return {
		callbackWaitsForEmptyEventLoop: false,
		functionName: "middy-conn-bench",
		functionVersion: "$LATEST",
		invokedFunctionArn: "arn:aws:lambda:us-east-1:000000000000:function:middy-conn-bench",
		memoryLimitInMB: "1024",
		awsRequestId: `bench-${invocations}`,
		logGroupName: "/aws/lambda/middy-conn-bench",
		logStreamName: "bench",
		getRemainingTimeInMillis: () => deadline - Date.now(),
		done: () => {},
		fail: () => {},
		succeed: () => {},
	};
};

/** The event every contender receives: the one a handler in the example would get for `GET /orders/1`. */
export const benchEvent = { id: 1 };

/**
 * One invocation of a middy handler, as the Lambda runtime makes it: the event and a fresh plain context. Middy
 * types the handler's context with what its middlewares add in `before`; the runtime passes a plain one.
 */
export const invoker =
	(handler: (event: never, context: never) => Promise<unknown>) => (): Promise<unknown> =>
		handler(benchEvent as never, lambdaContext() as never);
