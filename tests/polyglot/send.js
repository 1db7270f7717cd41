// A whole send through Herald's gRPC API from Node.js, written with the generated SDK package alone (`make sdk`,
// sdk/README.md): no .proto file, field name or enum number is spelled out here beyond what the SDK exports.
// A list, its subscribers, an email (updated with a lowerCamelCase mask), a campaign (refused a wrong mask
// path and a pause while Draft, each error's google.rpc details decoded; then set Ready with a snake_case
// mask), its progress watched through CampaignService.WatchCampaign until Sent, and its statistics.
//
// Environment: HERALD_SDK (the SDK package's directory), HERALD_TOKEN (a principal token, as
// `herald token mint` prints it), HERALD_CAMPAIGN_TARGET and HERALD_AUDIENCE_TARGET (host:port of
// each server process), HERALD_RECIPIENTS (comma-separated addresses) and
// HERALD_FROM (the sender address). Prints one JSON object per step on stdout; exits 1 on any error.
"use strict";

const path = require("node:path");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const sdk = env("HERALD_SDK");
const fromSdk = (module) => require(path.join(sdk, module));
// The @grpc/grpc-js the SDK's clients were built with: credentials and metadata must come from the same copy.
const grpc = require(require.resolve("@grpc/grpc-js", { paths: [sdk] }));
const campaignApi = fromSdk("herald/campaign/v1/campaign");
const emailApi = fromSdk("herald/campaign/v1/email");
const audienceApi = fromSdk("herald/audience/v1/audience");
const { Status } = fromSdk("google/rpc/status");
const { ErrorInfo, BadRequest } = fromSdk("google/rpc/error_details");

const credentials = grpc.credentials.createInsecure();
const campaigns = new campaignApi.CampaignServiceClient(env("HERALD_CAMPAIGN_TARGET"), credentials);
// EmailService is served by the campaign server process, beside CampaignService (its proto says so).
const emails = new emailApi.EmailServiceClient(env("HERALD_CAMPAIGN_TARGET"), credentials);
const audience = new audienceApi.AudienceServiceClient(env("HERALD_AUDIENCE_TARGET"), credentials);

const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${env("HERALD_TOKEN")}`);

const deadline = (seconds) => ({ deadline: new Date(Date.now() + seconds * 1000) });

// The google.rpc.Status in an error's grpc-status-details-bin trailer, with its ErrorInfo and BadRequest.
function details(error) {
  const [trailer] = error.metadata ? error.metadata.get("grpc-status-details-bin") : [];
  if (!trailer) return { code: grpc.status[error.code], reason: null };
  const status = Status.decode(trailer);
  const decoded = { code: grpc.status[status.code], message: status.message, reason: null };
  for (const detail of status.details) {
    if (detail.typeUrl.endsWith("/google.rpc.ErrorInfo")) {
      const info = ErrorInfo.decode(detail.value);
      Object.assign(decoded, { reason: info.reason, domain: info.domain, metadata: info.metadata });
    } else if (detail.typeUrl.endsWith("/google.rpc.BadRequest")) {
      decoded.violations = BadRequest.decode(detail.value).fieldViolations.map((v) => v.field);
    }
  }
  return decoded;
}

class CallError extends Error {
  constructor(method, error) {
    const decoded = details(error);
    super(`${method}: ${decoded.code} ${decoded.reason || ""} ${error.details}`);
    this.decoded = decoded;
  }
}

// One unary call as a promise, with a 10-second deadline; the request is made from its message's fromPartial.
const call = (client, method, type, request) =>
  new Promise((resolve, reject) => {
    client[method](type.fromPartial(request), metadata, deadline(10), (error, response) => {
      if (error) reject(new CallError(method, error));
      else resolve(response);
    });
  });

// The decoded details of a call that must fail.
const refusal = async (client, method, type, request) => {
  try {
    await call(client, method, type, request);
  } catch (error) {
    if (error instanceof CallError) return error.decoded;
    throw error;
  }
  throw new Error(`${method} succeeded`);
};

const report = (step, fields) => console.log(JSON.stringify({ step, ...fields }));
const statusName = campaignApi.campaignStatusToJSON;

// Resolves with every CampaignProgress the stream carried once it ended; rejects if it failed.
const watch = (campaignId) =>
  new Promise((resolve, reject) => {
    const seen = [];
    const request = campaignApi.WatchCampaignRequest.fromPartial({ campaignId });
    const stream = campaigns.watchCampaign(request, metadata, deadline(120));
    stream.on("data", (progress) => {
      seen.push(progress);
      report("progress", {
        status: statusName(progress.status),
        heartbeat: progress.heartbeat,
        total_sent: progress.statistics ? progress.statistics.totalSent : null,
      });
    });
    stream.on("error", (error) => reject(new CallError("watchCampaign", error)));
    stream.on("end", () => resolve(seen));
  });

async function main() {
  const recipients = env("HERALD_RECIPIENTS").split(",");

  const list = await call(audience, "createList", audienceApi.CreateListRequest, { name: "polyglot list" });
  report("list", { list_id: list.listId });
  for (const address of recipients) {
    const subscriber = await call(audience, "createSubscriber", audienceApi.CreateSubscriberRequest, {
      subscriber: {
        listId: list.listId,
        emailAddress: address,
        firstName: "Node",
        status: audienceApi.SubscriberStatus.SUBSCRIBER_STATUS_SUBSCRIBED,
        subscriptionIp: "203.0.113.7",
      },
    });
    report("subscriber", { subscriber_id: subscriber.subscriberId, email_address: subscriber.emailAddress });
  }

  const email = await call(emails, "createEmail", emailApi.CreateEmailRequest, {});
  // A lowerCamelCase mask, as the proto3 JSON mapping writes field masks.
  const emailMask = ["subject", "fromName", "fromEmail", "htmlContent", "plainContent"];
  const updated = await call(emails, "updateEmail", emailApi.UpdateEmailRequest, {
    email: {
      emailId: email.emailId,
      subject: "Hello from Node",
      fromName: "Polyglot",
      fromEmail: env("HERALD_FROM"),
      htmlContent: "<p>Hello %Subscriber:FirstName%, from a Node.js client.</p>",
      plainContent: "Hello %Subscriber:FirstName%, from a Node.js client.",
    },
    updateMask: emailMask,
    validateScope: emailApi.ValidateScope.VALIDATE_SCOPE_CAMPAIGN,
  });
  report("email", { email_id: updated.emailId, mask: emailMask, subject: updated.subject, from_name: updated.fromName });

  const campaign = await call(campaigns, "createCampaign", campaignApi.CreateCampaignRequest, {
    name: "polyglot campaign",
  });
  report("campaign", { campaign_id: campaign.campaignId, status: statusName(campaign.status) });

  // Errors carry google.rpc details: a mask path the API refuses, and a pause of a Draft campaign.
  const wrongPath = await refusal(campaigns, "updateCampaign", campaignApi.UpdateCampaignRequest, {
    campaign: { campaignId: campaign.campaignId },
    updateMask: ["scheduleType"],
  });
  report("refused", { call: "UpdateCampaign", ...wrongPath });
  const notSending = await refusal(campaigns, "pauseCampaign", campaignApi.PauseCampaignRequest, {
    campaignId: campaign.campaignId,
  });
  report("refused", { call: "PauseCampaign", ...notSending });

  // A snake_case mask, as the .proto spells the fields.
  const campaignMask = ["status", "email_id", "schedule", "targeting"];
  const ready = await call(campaigns, "updateCampaign", campaignApi.UpdateCampaignRequest, {
    campaign: {
      campaignId: campaign.campaignId,
      status: campaignApi.CampaignStatus.CAMPAIGN_STATUS_READY,
      emailId: email.emailId,
      schedule: { type: campaignApi.ScheduleType.SCHEDULE_TYPE_IMMEDIATE },
      targeting: { included: [{ listId: list.listId, segmentId: "0" }] },
    },
    updateMask: campaignMask,
  });
  report("ready", { campaign_id: ready.campaignId, status: statusName(ready.status), mask: campaignMask });

  const progress = await watch(campaign.campaignId);
  const last = progress[progress.length - 1];
  report("watched", { messages: progress.length, final_status: last ? statusName(last.status) : null });

  const sent = await call(campaigns, "getCampaign", campaignApi.GetCampaignRequest, {
    campaignId: campaign.campaignId,
    view: campaignApi.CampaignView.CAMPAIGN_VIEW_FULL,
    statisticsView: campaignApi.StatisticsView.STATISTICS_VIEW_TOTALS,
  });
  report("statistics", {
    campaign_id: sent.campaignId,
    status: statusName(sent.status),
    total_recipients: sent.statistics.totalRecipients,
    total_sent: sent.statistics.totalSent,
    total_failed: sent.statistics.totalFailed,
  });
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error.message);
    process.exit(1);
  },
);
