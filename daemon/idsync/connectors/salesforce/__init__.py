"""The Salesforce connector."""
