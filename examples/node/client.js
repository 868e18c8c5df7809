// Calls the sentiment service from Node.js with nothing but the proto file: no generated code,
// no Python. It shows that protos/sentiment/v1/sentiment.proto alone is the contract.
//
//   cd examples/node && npm ci
//   node client.js localhost:50051 "A wonderful, moving film." "Dull and far too long."
//
// The target is the first argument, else $SENTIMENT_TARGET, else localhost:50051; the other
// arguments are reviews. It prints one JSON object per line for GetModelInfo, Predict and each
// StreamPredict result, and exits 1 with a one-line error on stderr if a call fails.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "protos");
const DEADLINE_MS = 10_000;
const EXAMPLE_REVIEWS = ["A wonderful, moving film.", "Dull and far too long."];

// keepCase keeps the proto's field names (model_version); enums as their names, as in JSON.
const definition = protoLoader.loadSync("sentiment/v1/sentiment.proto", {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { SentimentService } = grpc.loadPackageDefinition(definition).sentiment.v1;

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// Sends every {id, review} on one stream; the server answers in the same order.
function streamPredict(client, requests) {
  return new Promise((resolve, reject) => {
    const call = client.StreamPredict({ deadline: deadline() });
    const responses = [];
    call.on("data", (response) => responses.push(response));
    call.on("error", reject);
    call.on("end", () => resolve(responses));
    for (const request of requests) call.write(request);
    call.end();
  });
}

function prediction(p) {
  return { label: p.label, score: Number(p.score.toFixed(6)), model_version: p.model_version };
}

function print(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

const [argTarget, ...argReviews] = process.argv.slice(2);
const target = argTarget || process.env.SENTIMENT_TARGET || "localhost:50051";

async function main() {
  const reviews = argReviews.length ? argReviews : EXAMPLE_REVIEWS;
  const client = new SentimentService(target, grpc.credentials.createInsecure());
  try {
    const info = await unary(client, "GetModelInfo", {});
    print({ rpc: "GetModelInfo", name: info.name, version: info.version, preset: info.preset });

    const { predictions } = await unary(client, "Predict", { reviews });
    print({ rpc: "Predict", predictions: predictions.map(prediction) });

    // An empty review among them: the stream reports it in place and goes on.
    const requests = [...reviews, ""].map((review, i) => ({ id: `r${i + 1}`, review }));
    for (const response of await streamPredict(client, requests)) {
      const result =
        response.result === "prediction"
          ? prediction(response.prediction)
          : { error: { code: grpc.status[response.error.code], message: response.error.message } };
      print({ rpc: "StreamPredict", id: response.id, ...result });
    }
  } finally {
    client.close();
  }
}

main().catch((error) => {
  process.stderr.write(`sentiment node client: ${error.message} (target ${target})\n`);
  process.exitCode = 1;
});
