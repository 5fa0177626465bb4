@0x8933fbd44bd7ba5a;
# A dynamically typed value, as VQL rows need it.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("outpost::schema");

struct Value {
  union {
    null @0 :Void;
    bool @1 :Bool;
    int64 @2 :Int64;
    uint64 @3 :UInt64;
    float64 @4 :Float64;
    text @5 :Text;
    bytes @6 :Data;
    timestamp @7 :Int64;   # nanoseconds since the Unix epoch, UTC
    list @8 :List(Value);
    dict @9 :List(Entry);  # ordered: VQL dicts keep insertion order
  }

  struct Entry {
    key @0 :Text;
    value @1 :Value;
  }
}
