// Artifacts (YAML, parameters, the built-in ones) and VqlSource, the engine
// as a query actor's source.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>

#include "queries/agent_sources.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::vql {
namespace {

const Engine& engine() {
  static const Engine e(default_registry());
  return e;
}

// The built-in artifacts, shared but not owned.
std::shared_ptr<const ArtifactRepository> builtin() {
  return std::shared_ptr<const ArtifactRepository>(&ArtifactRepository::builtin(), [](const ArtifactRepository*) {});
}

std::string parse_error(const std::string& yaml) {
  try {
    parse_artifact(yaml, "my.yaml", engine());
  } catch (const ArtifactError& e) {
    return e.what();
  }
  return "<parsed>";
}

using Given = std::vector<std::pair<std::string, std::string>>;

// What binding `given` to `a`'s parameters refuses, or "<bound>".
std::string bind_error(const Artifact& a, const Given& given) {
  try {
    bind_parameters(a, given);
  } catch (const ArtifactError& e) {
    return e.what();
  }
  return "<bound>";
}

TEST(Artifacts, EveryBuiltInParsesAndNamesItsFile) {
  const char* expected[] = {"Generic.Client.Info",          "Linux.Sys.Pslist",
                            "Linux.Sys.Users",              "Linux.Network.Netstat",
                            "Linux.Events.ProcessCreation", "Linux.Events.SSHLogin",
                            "Linux.Detection.Thumbdrives.List", "Linux.Response.KillProcess",
                            "Linux.Events.TrackProcesses", "Outpost.Client.Actors"};
  auto& repo = ArtifactRepository::builtin();
  EXPECT_EQ(repo.all().size(), std::size(expected));
  for (auto name : expected) {
    auto a = repo.find(name);
    ASSERT_TRUE(a) << name;
    EXPECT_FALSE(a->description.empty()) << name;
    EXPECT_EQ(a->event, std::string(name).find(".Events.") != std::string::npos ||
                            std::string(name).find("Thumbdrives") != std::string::npos)
        << name;
  }
}

TEST(Artifacts, MalformedFilesAreRefusedWithThePlace) {
  EXPECT_EQ(parse_error("name: A\nsources: [{query: SELECT * FROM info()}]\nautor: me\n"),
            "my.yaml: autor: unknown key; allowed: name, description, type, parameters, precondition, export, imports, sources");
  EXPECT_EQ(parse_error("name: A\nauthor: me\nprecondition: SELECT 1 FROM info()\nsources: [{query: SELECT * FROM info()}]\n"),
            "<parsed>");  // Velociraptor's keys that Outpost does not use
  EXPECT_EQ(parse_error("name: A\ntype: SERVER\nsources: [{query: SELECT * FROM info()}]\n"),
            "my.yaml: type: expected CLIENT or CLIENT_EVENT, got \"SERVER\"");
  EXPECT_EQ(parse_error("name: A\n"), "my.yaml: sources: expected a list of at least one source");
  EXPECT_EQ(parse_error("name: A B\nsources: [{query: SELECT * FROM info()}]\n"),
            "my.yaml: name: \"A B\" is not a name like Linux.Sys.Pslist");
  EXPECT_EQ(parse_error("name: A\nsources:\n  - query: |\n      SELECT *\n      FROM pslist(\n"),
            "my.yaml: sources[0].query: line 3, column 1: expected an argument name (arguments are named: "
            "name=value), found end of query");
  EXPECT_EQ(parse_error("name: A\nsources: [{query: SELECT * FROM nothing()}]\n"),
            "my.yaml: sources[0].query: line 1, column 15: unknown plugin nothing()");
  EXPECT_EQ(parse_error("name: A\nparameters: [{name: N, type: int, default: ten}]\nsources: [{query: SELECT N FROM info()}]\n"),
            "my.yaml: parameters[0].default: expected an integer, got \"ten\"");
  EXPECT_EQ(parse_error("name: A\nparameters: [{name: N, type: wat}]\nsources: [{query: SELECT N FROM info()}]\n"),
            "my.yaml: parameters[0].type: expected one of string, str, hidden, choices, glob, yara, regex, int, "
            "int64, integer, bool, float, timestamp, csv, artifactset, json, json_array, regex_array, multichoice, "
            "upload, upload_file, got \"wat\"");
  EXPECT_EQ(parse_error("name: A\nparameters: [{name: \"a`b\"}]\nsources: [{query: SELECT 1 FROM info()}]\n"),
            "my.yaml: parameters[0].name: \"a`b\": a name VQL cannot write (it holds `)");
  // An alias repeats a text without taking room in the file: the VQL it makes is bounded all the same.
  std::string aliased = "name: A\nsources:\n  - queries: [&q \"SELECT '" + std::string(100000, 'x') + "' FROM info()\"";
  for (int i = 0; i < 20; ++i) aliased += ", *q";
  EXPECT_EQ(parse_error(aliased + "]\n"), "my.yaml: sources[0].queries: more than 1048576 bytes of VQL");
  EXPECT_EQ(parse_error("name: A\nparameters: [{name: N, type: server_metadata}]\nsources: [{query: SELECT N FROM info()}]\n"),
            "my.yaml: parameters[0].type: type \"server_metadata\" is filled in by Velociraptor's server; Outpost's "
            "has no such values");
  EXPECT_EQ(parse_error("name: A\nparameters: [{name: N, type: json, default: '[1]'}]\n"
                        "sources: [{query: SELECT N FROM info()}]\n"),
            "my.yaml: parameters[0].default: expected a JSON object, got \"[1]\"");
  EXPECT_EQ(parse_error("name: A\nparameters: [{name: N}, {name: N}]\nsources: [{query: SELECT N FROM info()}]\n"),
            "my.yaml: parameters[1].name: \"N\" is declared twice");
  EXPECT_EQ(parse_error("name: [A\n"), "my.yaml: line 2, column 1: end of sequence flow not found");
}

TEST(Artifacts, ParametersTakeDefaultsOverridesAndTheirTypes) {
  auto a = parse_artifact(R"Y(name: P
parameters:
  - {name: S, default: text}
  - {name: I, type: int, default: "5"}
  - {name: B, type: bool, default: "Y"}
  - {name: R, type: regex, default: "^ssh"}
sources: [{query: "SELECT S, I + 1 AS I1, B, 'sshd' =~ R AS M FROM info()"}]
)Y",
                          "p.yaml", engine());
  auto binds = bind_parameters(a, {});
  ASSERT_EQ(binds.size(), 4u);
  EXPECT_TRUE(equal(binds[1].value, Value(int64_t{5})));
  EXPECT_TRUE(equal(binds[2].value, Value(true)));
  binds = bind_parameters(a, {{"I", "0x10"}, {"B", "false"}, {"S", "other"}});
  EXPECT_TRUE(equal(binds[0].value, Value("other")));
  EXPECT_TRUE(equal(binds[1].value, Value(int64_t{16})));
  EXPECT_TRUE(equal(binds[2].value, Value(false)));
  auto error = [&](const Given& given) { return bind_error(a, given); };
  EXPECT_EQ(error({{"I", "many"}}), "P: parameter I: expected an integer, got \"many\"");
  EXPECT_EQ(error({{"B", "maybe"}}), "P: parameter B: expected a boolean (Y/N, true/false, 1/0), got \"maybe\"");
  EXPECT_EQ(error({{"R", "("}}), "P: parameter R: not a valid regex: missing ): (");
  EXPECT_EQ(error({{"X", "1"}}), "P: parameter X: unknown; it takes S, I, B, R");

  // The parameters reach the query as variables of their types.
  Env env;
  auto stream = Engine(default_registry()).start(*a.sources[0].compiled, bind_parameters(a, {{"I", "41"}}), env);
  std::vector<Row> rows;
  while (stream->next(rows, 10).state != Step::State::done) {
  }
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"S\":\"text\",\"I1\":42,\"B\":true,\"M\":true}");
}

// Velociraptor's parameter types, its empty defaults and the keys only its GUI reads.
TEST(Artifacts, ParametersOfVelociraptorsTypesAndKeys) {
  auto a = parse_artifact(R"Y(name: V
reports: [{type: CLIENT, template: x}]
parameters:
  - {name: H, type: hidden, default: x}
  - {name: C, type: choices, choices: [a, b], default: a, friendly_name: Choice}
  - {name: F, type: float, default: "1.5"}
  - {name: T, type: timestamp}
  - {name: T2, type: timestamp, default: "2023-11-14T22:13:20Z"}
  - name: E
    default:
  - {name: I, type: int64, default: "7"}
  - {name: N, type: int64}
sources:
  - query: SELECT H, C, F, T, T2, E, I, N FROM info()
    notebook: [{type: vql_suggestion}]
)Y",
                          "v.yaml", engine());
  auto binds = bind_parameters(a, {});
  ASSERT_EQ(binds.size(), 8u);
  EXPECT_TRUE(equal(binds[0].value, Value("x")));
  EXPECT_TRUE(equal(binds[1].value, Value("a")));
  EXPECT_TRUE(equal(binds[2].value, Value(1.5)));
  EXPECT_TRUE(binds[3].value.is_null());  // an empty timestamp is no time
  ASSERT_TRUE(binds[4].value.as_timestamp());
  EXPECT_EQ(binds[4].value.as_timestamp()->ns, int64_t{1700000000} * 1'000'000'000);
  EXPECT_TRUE(equal(binds[5].value, Value("")));
  EXPECT_TRUE(equal(binds[6].value, Value(int64_t{7})));
  EXPECT_TRUE(equal(binds[7].value, Value(int64_t{0})));  // no default: int(int="") is 0 (Linux.Events.TrackProcesses' MaxSize)
  binds = bind_parameters(a, {{"T", "1700000000"}});
  ASSERT_TRUE(binds[3].value.as_timestamp());
  EXPECT_EQ(binds[3].value.as_timestamp()->ns, int64_t{1700000000} * 1'000'000'000);
  auto error = [&](const Given& given) { return bind_error(a, given); };
  EXPECT_EQ(error({{"F", "abc"}}), "V: parameter F: expected a number, got \"abc\"");
  EXPECT_EQ(error({{"T", "yesterday"}}), "V: parameter T: expected a time (epoch seconds or RFC 3339), got \"yesterday\"");
}

// Velociraptor's upload parameters take a file from its server; here the
// collector sends the file's content: `upload` is that content, and
// `upload_file` a file of the query's own holding it, gone when it ends.
TEST(Artifacts, UploadParametersAreTheFileSentOrAFileHoldingIt) {
  auto a = parse_artifact(R"Y(name: U
parameters:
  - {name: Rules, type: upload}
  - {name: Script, type: upload_file}
  - {name: Unset, type: upload_file}
sources:
  - query: SELECT Rules, read_file(filename=Script) AS Read, Unset, Script FROM scope()
)Y",
                          "u.yaml", engine());
  auto program = ArtifactRepository::builtin().programs(a);
  ASSERT_EQ(program.size(), 1u);
  std::vector<Row> rows;
  std::string script;
  {
    Env env;
    Engine running(default_registry());
    auto stream = running.start(*program[0], bind_parameters(a, {{"Rules", "rule r { condition: true }"},
                                                                  {"Script", "echo hi\n"}}), env);
    while (stream->next(rows, 100).state != Step::State::done) {
    }
    ASSERT_EQ(rows.size(), 1u);
    ASSERT_TRUE(rows[0].find("Script") && rows[0].find("Script")->as_string());
    script = *rows[0].find("Script")->as_string();
    EXPECT_NE(script.find("/outpost-tmp-"), std::string::npos) << script;
    EXPECT_TRUE(std::filesystem::exists(script)) << script;
  }
  EXPECT_EQ(to_json(rows[0]), "{\"Rules\":\"rule r { condition: true }\",\"Read\":\"echo hi\\u000a\",\"Unset\":\"\",\"Script\":\"" +
                                  script + "\"}");
  EXPECT_FALSE(std::filesystem::exists(script)) << "the query's file outlived it";
  EXPECT_EQ(bind_error(a, {{"Rules", "https://server/file.yar"}}),
            "U: parameter Rules: \"https://server/file.yar\" is a URL: an agent does not fetch parameters "
            "(Velociraptor's server-side file); send the file itself (outpost-collector collect --param-file "
            "Rules=FILE)");
}

TEST(Artifacts, UsersFromAFakePasswdThroughTheAgentsFactory) {
  testing::TempDir tmp;
  std::ofstream(tmp.path("passwd")) << "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/zsh\n";
  Paths paths;
  paths.passwd = tmp.path("passwd");
  auto factory = agent_sources(builtin(), nullptr, std::make_shared<const Paths>(paths));
  QuerySpec q;
  q.source.kind = SourceSpec::Kind::artifact;
  q.source.name = "Linux.Sys.Users";
  // The first column of every row the factory's source for `q` gives.
  auto first_column = [&](const QuerySpec& q) {
    factory.check(q);
    auto source = factory(q);
    std::vector<std::string> names;
    for (int i = 0; i < 100; ++i) {
      schemas::RowBatchWriter batch(1, "a", "s", schemas::Lane::RESULTS, source->columns());
      auto r = source->pull(batch, 100);
      if (batch.row_count()) {
        auto cols = source->columns();
        EXPECT_EQ(cols[0], "Name");
        auto encoded = batch.finish();
        schemas::RecordView view(encoded.words());
        for (auto row : view.record().getRowBatch().getRows()) names.push_back(row[0].getText().cStr());
      }
      if (r.state == PullResult::State::done) break;
    }
    return names;
  };
  EXPECT_EQ(first_column(q), (std::vector<std::string>{"root", "alice"}));
  QuerySpec inline_call;  // the same artifact called from VQL, in the agent's source
  inline_call.source.kind = SourceSpec::Kind::vql;
  inline_call.source.query = "SELECT Name FROM Artifact.Linux.Sys.Users()";
  EXPECT_EQ(first_column(inline_call), (std::vector<std::string>{"root", "alice"}));
  q.source.name = "No.Such";
  EXPECT_THROW(factory.check(q), ArtifactError);
  q.source.kind = SourceSpec::Kind::vql;
  q.source.query = "SELECT * FROM";
  EXPECT_THROW(factory.check(q), ParseError);
}

// A one-shot query's -p values: typed when they look like numbers or
// booleans, or as "name:type" says; text otherwise.
TEST(Artifacts, QueryParametersAreTypedLikeTheirText) {
  SourceSpec s;
  s.kind = SourceSpec::Kind::vql;
  s.query = "SELECT * FROM scope()";
  s.parameters = {{"n", "42"}, {"neg", "-7"}, {"f", "2.5"}, {"e", "1e3"}, {"b", "TRUE"}, {"zero", "007"},
                  {"text", "12ab"}, {"id:string", "42"}, {"i:int", "5"}, {"x:float", "3"}, {"y:bool", "false"},
                  {"big", "99999999999999999999"}, {"version", "1.10"}, {"plus", "+5"}, {"space", " 5"},
                  {"negzero", "-0"}, {"huge", "1e400"}};
  auto p = prepare(s, *builtin(), engine());
  std::map<std::string, std::string> typed;  // name: the value as JSON
  for (auto& b : p.parameters) append_json(typed[b.name], b.value);
  EXPECT_EQ(typed, (std::map<std::string, std::string>{{"n", "42"}, {"neg", "-7"}, {"f", "2.5"}, {"e", "\"1e3\""},
                                                       {"b", "true"}, {"zero", "\"007\""}, {"text", "\"12ab\""},
                                                       {"id", "\"42\""}, {"i", "5"}, {"x", "3"}, {"y", "false"},
                                                       {"big", "\"99999999999999999999\""}, {"version", "\"1.10\""},
                                                       {"plus", "\"+5\""}, {"space", "\" 5\""}, {"negzero", "-0"},
                                                       {"huge", "\"1e400\""}}));
  auto error = [&](const std::string& name, const std::string& value) {
    s.parameters = {{name, value}};
    try {
      prepare(s, *builtin(), engine());
    } catch (const ArtifactError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error("n:int", "five"), "parameter n: \"five\" is not an int");
  EXPECT_EQ(error("n:bool", "1"), "parameter n: \"1\" is not a bool");
  EXPECT_EQ(error("n:list", "1"), "parameter n:list: no type list (string, int, float or bool)");
}

TEST(Artifacts, VqlSourceCutsABatchWhereTheColumnsChange) {
  auto query = std::make_shared<const ast::Query>(engine().compile("SELECT * FROM foreach(row=[dict(a=1), dict(a=2), dict(b=3)])"));
  VqlSource source(engine(), {query}, {});
  std::vector<std::vector<std::string>> batches;
  std::vector<size_t> sizes;
  for (int i = 0; i < 20; ++i) {
    auto columns = source.columns();
    schemas::RowBatchWriter batch(1, "a", "s", schemas::Lane::RESULTS, columns);
    auto r = source.pull(batch, 100);
    if (batch.row_count()) {
      batches.push_back(columns);
      sizes.push_back(batch.row_count());
    }
    if (r.state == PullResult::State::done) break;
  }
  EXPECT_EQ(batches, (std::vector<std::vector<std::string>>{{"a"}, {"b"}}));
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 1}));
}

TEST(Artifacts, KillProcessIsAResponseActionOnARealProcess) {
  pid_t child = fork();
  if (child == 0) {
    execl("/bin/sleep", "sleep", "30", nullptr);
    _exit(127);
  }
  SourceSpec spec;
  spec.kind = SourceSpec::Kind::artifact;
  spec.name = "Linux.Response.KillProcess";
  spec.parameters = {{"Pid", std::to_string(child)}};
  auto p = prepare(spec, ArtifactRepository::builtin(), engine());
  Env env;
  auto stream = Engine(default_registry()).start(*p.queries[0], p.parameters, env);
  std::vector<Row> rows;
  while (stream->next(rows, 10).state != Step::State::done) {
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_TRUE(*rows[0].find("Success")->as_bool()) << to_json(rows[0]);
  // Without a Pid: 0, as Velociraptor's int(int=""), which kill() refuses
  // (it would signal the agent's process group).
  spec.parameters = {};
  auto none = prepare(spec, ArtifactRepository::builtin(), engine());
  Env none_env;
  auto refused = Engine(default_registry()).start(*none.queries[0], none.parameters, none_env);
  std::string error;
  try {
    while (refused->next(rows, 10).state != Step::State::done) {
    }
  } catch (const QueryError& e) {
    error = e.what();
  }
  EXPECT_EQ(error, "kill(): pid: must be a single process id, got 0");
}

TEST(Artifacts, ADirectoryTreeLoadsAndAFileThatDoesNotIsNamedWithItsError) {
  testing::TempDir tmp;
  std::filesystem::create_directories(tmp.path("a/b"));
  std::ofstream(tmp.path("a/b/mine.yaml")) << "name: Custom.Mine\nsources: [{query: SELECT 1 AS One FROM info()}]\n";
  std::ofstream(tmp.path("a/notes.txt")) << "not an artifact";
  std::ofstream(tmp.path("broken.yaml")) << "name: Custom.Broken\nsources: [{query: SELECT * FROM nothing()}]\n";
  std::ofstream(tmp.path("pslist.yml")) << "name: Linux.Sys.Pslist\nsources: [{query: SELECT 2 AS Two FROM info()}]\n";
  LoadReport report;
  auto repo = load_artifacts({tmp.root().string()}, default_registry(), report);
  ASSERT_TRUE(repo->find("Custom.Mine"));
  EXPECT_EQ(repo->find("Custom.Mine")->origin, tmp.path("a/b/mine.yaml").string());
  EXPECT_FALSE(repo->find("Custom.Broken"));
  EXPECT_EQ(report.loaded, 2u);
  ASSERT_EQ(report.failed.size(), 1u);
  EXPECT_EQ(report.failed[0].origin, tmp.path("broken.yaml").string());
  EXPECT_EQ(report.failed[0].message, "sources[0].query: line 1, column 15: unknown plugin nothing()");
  ASSERT_EQ(report.replaced.size(), 1u);  // over the built-in one, which is gone
  EXPECT_EQ(report.replaced[0].message, "Linux.Sys.Pslist replaces the one from built-in");
  EXPECT_EQ(repo->find("Linux.Sys.Pslist")->sources[0].query, "SELECT 2 AS Two FROM info()");
  EXPECT_TRUE(repo->find("Linux.Sys.Users"));  // the other built-ins stay

  LoadReport missing;
  load_artifacts({tmp.path("nowhere").string()}, default_registry(), missing);
  ASSERT_EQ(missing.failed.size(), 1u);
  EXPECT_EQ(missing.failed[0].message, "no such file or directory");
}

TEST(Artifacts, ImportsAndCallsOfArtifactsThatAreNotThereAreRefusedWhenLoaded) {
  testing::TempDir tmp;
  auto write = [&](const std::string& file, const std::string& yaml) { std::ofstream(tmp.path(file)) << yaml; };
  write("a.yaml", "name: T.A\nimports: [T.Gone]\nsources: [{query: SELECT 1 AS One FROM scope()}]\n");
  write("b.yaml", "name: T.B\nsources: [{query: SELECT * FROM Artifact.T.Nowhere()}]\n");
  write("c.yaml", "name: T.C\nsources: [{query: \"SELECT * FROM Artifact.T.D(Bogus=1)\"}]\n");
  write("d.yaml", "name: T.D\nparameters: [{name: Real}]\nsources: [{query: SELECT Real FROM scope()}]\n");
  write("e.yaml", "name: T.AlsoGone\nsources: [{query: SELECT * FROM Artifact.T.B()}]\n");  // B goes: so does this one (checked first)
  LoadReport report;
  auto repo = load_artifacts({tmp.root().string()}, default_registry(), report);
  std::map<std::string, std::string> failed;
  for (auto& f : report.failed) failed[std::filesystem::path(f.origin).filename().string()] = f.message;
  EXPECT_EQ(failed["a.yaml"], "T.A: imports: unknown artifact T.Gone");
  EXPECT_EQ(failed["b.yaml"], "line 1, column 15: Artifact.T.Nowhere(): unknown artifact");
  EXPECT_EQ(failed["c.yaml"], "line 1, column 15: Artifact.T.D(): Bogus: not a parameter of T.D");
  EXPECT_EQ(failed["e.yaml"], "line 1, column 15: Artifact.T.B(): unknown artifact");
  EXPECT_EQ(failed.size(), 4u);
  EXPECT_TRUE(repo->find("T.D"));
  EXPECT_EQ(report.loaded, 1u);
}

TEST(Artifacts, AnArtifactThatCallsItselfFailsAtTheDepthLimit) {
  ArtifactRepository repo;
  repo.add(parse_artifact("name: T.Loop\nsources: [{query: SELECT * FROM Artifact.T.Loop()}]\n", "loop.yaml", engine()));
  Engine e(default_registry(), &repo);
  Env env;
  auto stream = e.start(*repo.programs(*repo.find("T.Loop"))[0], {}, env);
  std::vector<Row> rows;
  try {
    while (stream->next(rows, 10).state != Step::State::done) {
    }
    ADD_FAILURE() << "it ended";
  } catch (const QueryError& error) {
    EXPECT_STREQ(error.what(), "artifacts call each other more than 10 deep (does one call itself?)");
  }
}

TEST(Artifacts, PreconditionsExportsAndSourcesAreCheckedWhereWritten) {
  EXPECT_EQ(parse_error("name: A\nprecondition: LET x = 1\nsources: [{query: SELECT 1 FROM scope()}]\n"),
            "my.yaml: precondition: expected a query ending in SELECT");
  EXPECT_EQ(parse_error("name: A\nexport: LET x = nothing()\nsources: [{query: SELECT 1 FROM scope()}]\n"),
            "my.yaml: export: line 1, column 9: unknown function nothing()");
  EXPECT_EQ(parse_error("name: A\nsources: [{query: SELECT 1 FROM scope(), queries: [SELECT 2 FROM scope()]}]\n"),
            "my.yaml: sources[0]: both query and queries: give one");
  EXPECT_EQ(parse_error("name: A\nsources: [{name: S, query: SELECT 1 FROM scope()}, {name: S, query: SELECT 2 "
                        "FROM scope()}]\n"),
            "my.yaml: sources[1].name: \"S\" is taken twice");
  EXPECT_EQ(parse_error("name: A\nsources: [{precondition: SELECT 1 FROM nothing(), query: SELECT 1 FROM scope()}]\n"),
            "my.yaml: sources[0].precondition: line 1, column 15: unknown plugin nothing()");
}

}  // namespace
}  // namespace outpost::vql
