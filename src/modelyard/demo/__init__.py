"""The quickstart demo: the support desk's rule-based specialists (`orders`, `desk`), the
ticket workload (`workload`), its summary (`summary`) and report (`report`, `diagram`), which
`modelyard demo` puts together."""
