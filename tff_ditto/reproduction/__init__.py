"""The Ditto paper's experiment grid as data, its resumable runner and report.

Modules, one concept each:
  * `grid`: columns (attack, ratio), `Cell`s, table rows and the paper's
    tables and figures as `TableSpec`s (`paper_cells`), and selecting
    cells; imports no TensorFlow.
  * `paper_tables`: the paper's numbers (every number of its Tables 1-3,
    from the package's `paper_tables.csv`).
  * `availability`: which datasets can run from a data directory.
  * `run_settings`: `RunSettings` and each cell's config, dataset settings
    and folder, and the check that a folder holds a run of the same
    settings.
  * `result_rows`: the grid's result rows (one per cell), their statuses.
  * `derived_rows`: a Table 1 column's rows read from its one Ditto cell.
  * `running`: `run_grid`, every cell in this process, resumable.
  * `tables`, `comparisons`, `claims`, `plots`, `report`: REPORT.md
    (`write_report`) with the paper's numbers side by side, Ditto against
    global, a verdict on each of the paper's claims, and the Figure 3-6
    PNGs.

The names this module had as one file stay importable from the package
(`reproduction.run_grid`, ...): each is imported from its module on first
use, so importing the package (or `grid` alone) starts no TensorFlow.
"""

import importlib

# The public names of each module, as re-exported by the package.
_EXPORTS = {
    'grid': (
        'Column',
        'CLEAN',
        'A1_A2_COLUMNS',
        'DEFAULT_A3_RATIOS',
        'A3_RATIOS',
        'TERM_TILTS',
        'SOLVER_LAMBDAS',
        'ROBUST_AGGREGATORS',
        'a3_ratios',
        'attack_columns',
        'strongest_columns',
        'table3_columns',
        'figure5_columns',
        'is_strong_attack',
        'Cell',
        'make_cell',
        'PER_DEVICE_LAMBDA',
        'Row',
        'TableSpec',
        'TABLE1',
        'TABLE2',
        'PAPER_TABLE3_AGGREGATORS',
        'TABLE3',
        'FIGURE4',
        'FIGURE6',
        'PAPER_SPECS',
        'paper_cells',
        'spec_by_key',
        'parse_column',
        'parse_rounds',
        'ColumnsFn',
        'parse_columns',
        'select_cells',
    ),
    'paper_tables': (
        'PAPER_TABLES_CSV',
        'PaperNumber',
        'PaperKey',
        'paper_column',
        'read_paper_tables',
        'paper_numbers',
        'paper_number',
        'has_paper_numbers',
    ),
    'availability': ('NOT_RUN_DATASETS', 'available_datasets'),
    'run_settings': (
        'RunSettings',
        'QUICK_CONFIG_OVERRIDES',
        'describe_overrides',
        'cell_config',
        'VALIDATION_FRACTION',
        'dataset_settings',
        'cell_dir',
        'recorded_config_values',
        'recorded_settings_mismatch',
    ),
    'result_rows': ('DERIVED_STATUS', 'FINISHED_STATUSES'),
    'derived_rows': (
        'DERIVED_REPORT_LAMBDAS',
        'derived_source_cell',
        'DerivedRow',
        'plan_derived_rows',
        'derived_result_row',
    ),
    'running': ('run_grid',),
    'tables': ('DERIVED_MARKER', 'table_frame', 'table_markdown'),
    'comparisons': (
        'SIGNIFICANCE_LEVEL',
        'sign_test_p_value',
        'paired_device_comparison',
        'CellComparison',
        'compare_cells',
        'devices_text',
        'TABLE1_DITTO_ROWS',
        'ditto_vs_global',
        'ditto_vs_robust_global',
    ),
    'claims': (
        'Check',
        'Claim',
        'CLAIMS',
        'check_verdict',
        'claim_verdict',
        'check_claim',
        'claims_summary',
        'claims_details',
    ),
    'plots': ('plot_figures',),
    'report': ('git_revision', 'REPORT_LEGEND', 'write_report'),
}
_MODULE_OF = {
    name: module for module, names in _EXPORTS.items() for name in names
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
  """A re-exported name, imported from its module on first use."""
  if name not in _MODULE_OF:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module = importlib.import_module(f'{__name__}.{_MODULE_OF[name]}')
  value = getattr(module, name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_MODULE_OF))
