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
