"""Result tables of recbole_mm: ``python -m recbole_mm.results --all`` runs every table under the CPU protocol
(``results/protocols/cpu.yaml``) and writes ``results/<table>.md``; ``--protocol reference`` runs the
reference-sized protocol (a GPU's work). Tables and how to add a row: :mod:`recbole_mm.results.tables`.
"""
