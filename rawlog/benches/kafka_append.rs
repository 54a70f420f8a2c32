//! Append throughput of the Kafka raw log (through rdkafka's in-process `MockCluster`) against
//! the embedded log. Filled in below.

fn main() {}
