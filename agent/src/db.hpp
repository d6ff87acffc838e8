// A thin libpq wrapper: one connection, statements prepared once per connection, every value a
// bind parameter (the statement texts are constants, so no survey id, token or comment ever
// appears in a statement the server could log).
#pragma once
#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace agent {

using Param = std::optional<std::string>;  // nullopt = SQL NULL

class Result {
 public:
  explicit Result(PGresult *r) : r_(r, PQclear) {}
  bool ok() const;             // command or tuples OK
  int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
  bool null(int row, int col) const { return PQgetisnull(r_.get(), row, col); }
  std::string get(int row, int col) const { return PQgetvalue(r_.get(), row, col); }
  std::string sqlstate() const;  // "" when none
  std::string message() const;   // the server's primary message (may name survey ids, never tokens)
 private:
  std::shared_ptr<PGresult> r_;
};

struct Statement {
  const char *name;
  const char *sql;
  int nparams;
};

class Db {
 public:
  Db(std::string conninfo, std::vector<Statement> statements)
      : conninfo_(std::move(conninfo)), statements_(std::move(statements)) {}
  ~Db() { close(); }
  Db(const Db &) = delete;
  Db &operator=(const Db &) = delete;

  bool connect(std::string &error);  // (re)connects and prepares every statement
  void close();
  bool connected() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }
  Result run(const char *name, const std::vector<Param> &params);  // a prepared statement
  Result exec(const char *sql);                                    // a constant statement
  PGconn *raw() { return conn_; }
  // After a failed statement: was it the connection (reconnect) rather than the statement?
  bool broken() const { return !conn_ || PQstatus(conn_) != CONNECTION_OK; }

 private:
  std::string conninfo_;
  std::vector<Statement> statements_;
  PGconn *conn_ = nullptr;
};

// "{1,2,3}" for a bigint[] parameter.
std::string bigint_array(const std::vector<long long> &ids);

}  // namespace agent
