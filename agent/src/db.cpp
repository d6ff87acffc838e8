#include "db.hpp"

namespace agent {

bool Result::ok() const {
  if (!r_) return false;
  auto s = PQresultStatus(r_.get());
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

std::string Result::sqlstate() const {
  const char *s = r_ ? PQresultErrorField(r_.get(), PG_DIAG_SQLSTATE) : nullptr;
  return s ? s : "";
}

std::string Result::message() const {
  const char *s = r_ ? PQresultErrorField(r_.get(), PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  return s ? s : "connection lost";
}

void Db::close() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
}

bool Db::connect(std::string &error) {
  close();
  // The conninfo string is expanded as dbname; empty values fall back to the PG* environment.
  const char *keys[] = {"dbname", "fallback_application_name", "connect_timeout", nullptr};
  const char *vals[] = {conninfo_.c_str(), "nps-billing-agent", "10", nullptr};
  conn_ = PQconnectdbParams(keys, vals, 1);
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
    error = conn_ ? PQerrorMessage(conn_) : "out of memory";
    while (!error.empty() && (error.back() == '\n' || error.back() == ' ')) error.pop_back();
    close();
    return false;
  }
  for (const auto &s : statements_) {
    Result r(PQprepare(conn_, s.name, s.sql, s.nparams, nullptr));
    if (!r.ok()) {
      error = std::string("preparing ") + s.name + ": " + r.sqlstate() + " " + r.message();
      close();
      return false;
    }
  }
  return true;
}

Result Db::run(const char *name, const std::vector<Param> &params) {
  if (!conn_) return Result(nullptr);
  std::vector<const char *> vals;
  vals.reserve(params.size());
  for (const auto &p : params) vals.push_back(p ? p->c_str() : nullptr);
  return Result(PQexecPrepared(conn_, name, static_cast<int>(vals.size()), vals.data(), nullptr, nullptr, 0));
}

Result Db::exec(const char *sql) {
  if (!conn_) return Result(nullptr);
  return Result(PQexec(conn_, sql));
}

std::string bigint_array(const std::vector<long long> &ids) {
  std::string s = "{";
  for (size_t i = 0; i < ids.size(); i++) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s + "}";
}

}  // namespace agent
