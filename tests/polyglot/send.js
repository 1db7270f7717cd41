// A whole send through Herald's gRPC API from Node.js, written from protos/ and a token alone: a list,
// its subscribers, an email and a campaign; the campaign set Ready (Immediate, to the list); its progress
// watched through CampaignService.WatchCampaign until Sent; then its statistics.
//
// Environment: HERALD_PROTOS (the protos/ directory), HERALD_TOKEN (a principal token, as
// `herald token mint` prints it), HERALD_CAMPAIGN_TARGET and HERALD_AUDIENCE_TARGET (host:port of
// each service), HERALD_RECIPIENTS (comma-separated addresses) and
// HERALD_FROM (the sender address). Prints one JSON object per step on stdout; exits 1 on any error.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

// keepCase: field names as in the .proto (snake_case); the default camelCase would silently drop
// {campaign_id: 1}. longs: String, since int64 ids may exceed 2^53. enums: String, to read names.
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const protos = env("HERALD_PROTOS");
const files = [
  "herald/audience/v1/audience.proto",
  "herald/campaign/v1/campaign.proto",
  "herald/campaign/v1/email.proto",
];
const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [protos] });
const herald = grpc.loadPackageDefinition(definition).herald;

const credentials = grpc.credentials.createInsecure();
const campaigns = new herald.campaign.v1.CampaignService(env("HERALD_CAMPAIGN_TARGET"), credentials);
// EmailService is served by the campaign server.
const emails = new herald.campaign.v1.EmailService(env("HERALD_CAMPAIGN_TARGET"), credentials);
const audience = new herald.audience.v1.AudienceService(env("HERALD_AUDIENCE_TARGET"), credentials);

const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${env("HERALD_TOKEN")}`);

const deadline = (seconds) => ({ deadline: new Date(Date.now() + seconds * 1000) });

// One unary call as a promise, with a 10-second deadline.
const call = (client, method, request) =>
  new Promise((resolve, reject) => {
    client[method](request, metadata, deadline(10), (error, response) => {
      if (error) reject(new Error(`${method}: ${grpc.status[error.code]} ${error.details}`));
      else resolve(response);
    });
  });

const report = (step, fields) => console.log(JSON.stringify({ step, ...fields }));

// Resolves with every CampaignProgress the stream carried once it ended; rejects if it failed.
const watch = (campaignId) =>
  new Promise((resolve, reject) => {
    const seen = [];
    const stream = campaigns.WatchCampaign({ campaign_id: campaignId }, metadata, deadline(120));
    stream.on("data", (progress) => {
      seen.push(progress);
      report("progress", {
        status: progress.status,
        heartbeat: progress.heartbeat,
        total_sent: progress.statistics ? progress.statistics.total_sent : null,
      });
    });
    stream.on("error", (error) => reject(new Error(`WatchCampaign: ${grpc.status[error.code]} ${error.details}`)));
    stream.on("end", () => resolve(seen));
  });

async function main() {
  const recipients = env("HERALD_RECIPIENTS").split(",");

  const list = await call(audience, "CreateList", { name: "polyglot list" });
  report("list", { list_id: list.list_id });
  for (const address of recipients) {
    const subscriber = await call(audience, "CreateSubscriber", {
      subscriber: {
        list_id: list.list_id,
        email_address: address,
        first_name: "Node",
        status: "SUBSCRIBER_STATUS_SUBSCRIBED",
        subscription_ip: "203.0.113.7",
      },
    });
    report("subscriber", { subscriber_id: subscriber.subscriber_id, email_address: subscriber.email_address });
  }

  const email = await call(emails, "CreateEmail", {});
  await call(emails, "UpdateEmail", {
    email: {
      email_id: email.email_id,
      subject: "Hello from Node",
      from_name: "Polyglot",
      from_email: env("HERALD_FROM"),
      html_content: "<p>Hello %Subscriber:FirstName%, from a Node.js client.</p>",
      plain_content: "Hello %Subscriber:FirstName%, from a Node.js client.",
    },
    update_mask: { paths: ["subject", "from_name", "from_email", "html_content", "plain_content"] },
    validate_scope: "VALIDATE_SCOPE_CAMPAIGN",
  });
  report("email", { email_id: email.email_id });

  const campaign = await call(campaigns, "CreateCampaign", { name: "polyglot campaign" });
  report("campaign", { campaign_id: campaign.campaign_id, status: campaign.status });

  const ready = await call(campaigns, "UpdateCampaign", {
    campaign: {
      campaign_id: campaign.campaign_id,
      status: "CAMPAIGN_STATUS_READY",
      email_id: email.email_id,
      schedule: { type: "SCHEDULE_TYPE_IMMEDIATE" },
      targeting: { included: [{ list_id: list.list_id, segment_id: "0" }] },
    },
    update_mask: { paths: ["status", "email_id", "schedule", "targeting"] },
  });
  report("ready", { campaign_id: ready.campaign_id, status: ready.status });

  const progress = await watch(campaign.campaign_id);
  const last = progress[progress.length - 1];
  report("watched", { messages: progress.length, final_status: last ? last.status : null });

  // The campaign's statistics come with the full view (delivery's own statistics RPC is internal).
  const sent = await call(campaigns, "GetCampaign", {
    campaign_id: campaign.campaign_id,
    view: "CAMPAIGN_VIEW_FULL",
    statistics_view: "STATISTICS_VIEW_TOTALS",
  });
  report("statistics", {
    campaign_id: sent.campaign_id,
    status: sent.status,
    total_recipients: sent.statistics.total_recipients,
    total_sent: sent.statistics.total_sent,
    total_failed: sent.statistics.total_failed,
  });
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error.message);
    process.exit(1);
  },
);
