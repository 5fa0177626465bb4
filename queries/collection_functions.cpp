// VQL over dicts, lists and queries: items(), to_dict(), set(), flatten().

#include "queries/engine.hpp"

namespace outpost::vql {
namespace {

Row key_value(Value key, Value value) {
  Row row;
  row.set("_key", std::move(key));
  row.set("_value", std::move(value));
  return row;
}

// The members of a dict or an object as {_key, _value} rows.
std::optional<std::vector<Row>> members(const Value& v) {
  std::vector<Row> rows;
  if (auto d = v.as_dict()) {
    for (auto& [k, item] : d->items()) rows.push_back(key_value(k, item));
    return rows;
  }
  if (auto o = v.as_object()) {
    for (auto& name : o->members()) rows.push_back(key_value(name, o->member(name).value_or(Value())));
    return rows;
  }
  return std::nullopt;
}

// Each row of `inner` rewritten into zero or more rows by `map`.
class MapStream : public RowStream {
 public:
  using Map = std::function<void(Row, std::vector<Row>&)>;
  MapStream(std::unique_ptr<RowStream> inner, Map map) : inner_(std::move(inner)), map_(std::move(map)) {}
  Step next(std::vector<Row>& out, size_t budget) override {
    std::vector<Row> rows;
    Step step = inner_->next(rows, budget);
    for (auto& row : rows) map_(std::move(row), out);
    return step;
  }

 private:
  std::unique_ptr<RowStream> inner_;
  Map map_;
};

std::unique_ptr<RowStream> items_plugin(const Args& args, Env&) {
  const Value* item = args.find("item");
  if (!item) return rows_stream({});
  if (auto rows = members(*item)) return rows_stream(std::move(*rows));
  if (auto l = item->as_list()) {
    std::vector<Row> rows;
    for (size_t i = 0; i < l->size(); ++i) rows.push_back(key_value(static_cast<int64_t>(i), (*l)[i]));
    return rows_stream(std::move(rows));
  }
  if (item->as_query()) {
    auto index = std::make_shared<int64_t>(0);
    return std::make_unique<MapStream>(rows_of(*item), [index](Row row, std::vector<Row>& out) {
      out.push_back(key_value((*index)++, Value(std::move(row))));
    });
  }
  return rows_stream({key_value(int64_t{0}, *item)});
}

// Every list-valued column expanded into a row per item, across such
// columns a row per combination; an empty list leaves the row as it is.
void flatten_row(Row row, std::vector<Row>& out) {
  std::vector<Row> rows{Row()};
  for (auto& [name, value] : row.items()) {
    auto l = value.as_list();
    if (!l || l->empty()) {
      for (auto& r : rows) r.set(name, value);
      continue;
    }
    std::vector<Row> expanded;
    for (auto& r : rows)
      for (auto& item : *l) {
        Row copy = r;
        auto d = item.as_dict();
        auto unwrapped = d && d->size() == 1 && d->items()[0].first == "_value" ? d->items()[0].second : item;
        copy.set(name, unwrapped);
        expanded.push_back(std::move(copy));
      }
    rows = std::move(expanded);
    if (rows.size() > kMaxMaterializedRows)
      throw QueryError("flatten(): one row expands into more than " + std::to_string(kMaxMaterializedRows) + " rows");
  }
  for (auto& r : rows) out.push_back(std::move(r));
}

}  // namespace

void add_collection_functions(Registry& r) {
  r.add(PluginSpec{"items",
                   "A row per member: of a dict or object {_key: name, _value}, of a list or query {_key: index, "
                   "_value}; another value is one row.",
                   {{"item", "any", false, ""}}, false, items_plugin});
  r.add(FunctionSpec{"items", "A dict's members as a list of {_key, _value}; another value as [{_value: item}].",
                     {{"item", "any", false, ""}}, [](const Args& a, Env&) -> Value {
                       const Value* item = a.find("item");
                       if (!item) return List{};
                       if (auto rows = members(*item)) return List(rows->begin(), rows->end());
                       Row row;
                       row.set("_value", *item);
                       return List{Value(std::move(row))};
                     }});
  r.add(FunctionSpec{"to_dict",
                     "A dict: from rows (or a list) of {_key, _value} (empty keys skipped), or a dict or object's "
                     "members.",
                     {{"item", "any", false, ""}}, [](const Args& a, Env&) -> Value {
                       const Value* item = a.find("item");
                       if (!item) return Dict();
                       if (item->as_dict()) return *item;
                       if (auto o = item->as_object()) {
                         Dict out;
                         for (auto& name : o->members()) out.set(name, o->member(name).value_or(Value()));
                         return out;
                       }
                       Value rows = materialize(*item);
                       Dict out;
                       for (auto& row : rows.as_list() ? *rows.as_list() : List{}) {
                         auto d = row.as_dict();
                         auto key = d ? d->find("_key") : nullptr;
                         if (!key || to_string(*key).empty()) continue;
                         auto value = d->find("_value");
                         out.set(to_string(*key), value ? *value : Value());
                       }
                       return out;
                     }});
  r.add(FunctionSpec{"set",
                     "Sets `field` of the dict `item` to `value`, in place (every holder of the dict sees it, as in "
                     "Velociraptor), and returns the dict.",
                     {{"item", "dict", true, ""}, {"field", "string", true, ""}, {"value", "any", true, ""}},
                     [](const Args& a, Env&) -> Value {
                       const Value& item = a.require("item");
                       auto d = item.as_dict();
                       if (!d) a.fail("item", std::string("expected a dict, got ") + type_name(item));
                       const Value* value = a.find("value");
                       // The one change of a value in place: a query's values are used by its thread only.
                       const_cast<Dict*>(d)->set(a.string("field").value_or(""), value ? *value : Value());
                       return item;
                     }});
  r.add(PluginSpec{"flatten",
                   "The rows of `query`, each list-valued column expanded into a row per item (across several such "
                   "columns, a row per combination).",
                   {{"query", "query", true, ""}}, false, [](const Args& a, Env&) -> std::unique_ptr<RowStream> {
                     return std::make_unique<MapStream>(rows_of(a.require("query")), flatten_row);
                   }});
}

}  // namespace outpost::vql
