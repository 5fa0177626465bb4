#include "net/collector/jetstream_lines.hpp"

#include <algorithm>
#include <cstring>

#include "persistence/errors.hpp"

namespace outpost::net {

using persistence::StoreError;

StreamLines::StreamLines(const StreamAccess& access, const std::string& agent, const std::string& folder,
                         int64_t since_ns, std::chrono::milliseconds timeout) {
  NatsLink link;
  link.servers = access.servers;
  link.ca = access.ca;
  link.cert = access.cert;
  link.key = access.key;
  link.creds = access.creds;
  where_ = "stream " + access.stream + " on " + nats_where(link);
  NatsOptions opts = nats_options(link, timeout);
  natsConnection* nc = nullptr;
  natsStatus s = natsConnection_Connect(&nc, opts.get());
  if (s != NATS_OK) throw StoreError("cannot connect to NATS to read " + where_ + ": " + nats_status_text(s));
  nc_.reset(nc);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = timeout.count();
  if ((s = natsConnection_JetStream(&js_, nc_.get(), &jo)) != NATS_OK)
    throw StoreError("no JetStream to read " + where_ + ": " + nats_status_text(s));
  // <prefix>.<agent>.<lane>.<folder>
  std::string filter = access.subject_prefix + "." + subject_token(agent) + "." +
                       (folder.empty() ? std::string(">") : "*." + subject_token(folder));
  jsSubOptions so = ordered_since(access.stream, since_ns);
  jsErrCode jerr = static_cast<jsErrCode>(0);
  s = js_SubscribeSync(&sub_, js_, filter.c_str(), &jo, &so, &jerr);
  if (s != NATS_OK)
    throw StoreError("cannot read " + filter + " in " + where_ + ": " + nats_status_text(s) + " (JetStream error " +
                     std::to_string(jerr) + ")");
  timeout_ = timeout;
  jsConsumerInfo* info = nullptr;
  s = natsSubscription_GetConsumerInfo(&info, sub_, &jo, &jerr);
  if (s != NATS_OK)
    throw StoreError("cannot read " + filter + " in " + where_ + ": " + nats_status_text(s) + " (JetStream error " +
                     std::to_string(jerr) + ")");
  caught_up_ = info->NumPending == 0;
  jsConsumerInfo_Destroy(info);
}

StreamLines::~StreamLines() {
  if (sub_) {
    natsSubscription_Unsubscribe(sub_);
    natsSubscription_Destroy(sub_);
  }
  if (js_) jsCtx_Destroy(js_);
}

void StreamLines::read_new(std::map<std::string, std::vector<std::string>>& by_folder,
                           std::chrono::milliseconds wait) {
  for (bool got = false;; got = true) {
    // Until it has what was stored at the start, the next message is on its
    // way; then one wait, and what came with it.
    int64_t timeout = !caught_up_ ? timeout_.count() : got ? 1 : std::max<int64_t>(1, wait.count());
    natsMsg* raw = nullptr;
    natsStatus s = natsSubscription_NextMsg(&raw, sub_, timeout);
    if (s == NATS_TIMEOUT && caught_up_) return;
    if (s != NATS_OK) throw StoreError("cannot read " + where_ + ": " + nats_status_text(s));
    NatsOwned<natsMsg> msg(raw);
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, raw) == NATS_OK) {
      if (meta->NumPending == 0) caught_up_ = true;  // the last one stored when it was sent
      jsMsgMetaData_Destroy(meta);
    }
    read_lines(raw, by_folder);
  }
}

void StreamLines::read_lines(natsMsg* raw, std::map<std::string, std::vector<std::string>>& by_folder) {
  const char* file = nullptr;
  const char* offset = nullptr;
  if (natsMsgHeader_Get(raw, kFileHeader, &file) != NATS_OK || !file) return;
  if (natsMsgHeader_Get(raw, kOffsetHeader, &offset) == NATS_OK) return;  // an upload's chunk, not lines
  std::string folder = folder_of_file(file);
  if (folder.empty()) return;
  auto& lines = by_folder[folder];
  const char* data = natsMsg_GetData(raw);
  size_t size = static_cast<size_t>(natsMsg_GetDataLength(raw));
  for (size_t at = 0; at < size;) {
    const char* end = static_cast<const char*>(memchr(data + at, '\n', size - at));
    size_t stop = end ? static_cast<size_t>(end - data) : size;
    if (stop > at) lines.emplace_back(data + at, stop - at);
    at = stop + 1;
  }
}

}  // namespace outpost::net
