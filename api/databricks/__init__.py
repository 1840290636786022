"""Databricks Foundation Model APIs: /serving-endpoints/{name}/invocations and the OpenAI-style
/serving-endpoints/... routes OpenAI clients pointed at Databricks call."""
