//! [`TemplateRegistry`]: the task templates an engine can start tasks from, loaded from a
//! directory of YAML files or from strings, looked up by namespace, name and optional version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tasker_core::template::{TaskTemplate, TemplateVersion};

use crate::error::EngineError;

/// Task templates by namespace, name and version. Cheap to clone (templates are shared).
#[derive(Debug, Clone, Default)]
pub struct TemplateRegistry {
    /// `(namespace, name)` → version → template.
    templates: BTreeMap<(String, String), BTreeMap<TemplateVersion, Arc<TaskTemplate>>>,
}

impl TemplateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every `*.yaml` / `*.yml` file of `dir` (not recursing), in name order.
    ///
    /// # Errors
    ///
    /// [`EngineError::Io`] when the directory or a file cannot be read,
    /// [`EngineError::Template`] naming the file of an invalid template,
    /// [`EngineError::DuplicateTemplate`] when two files define the same namespace/name/version.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, EngineError> {
        let mut registry = Self::new();
        registry.load_dir(dir)?;
        Ok(registry)
    }

    /// Adds every `*.yaml` / `*.yml` file of `dir` (see [`Self::from_dir`]); returns how many
    /// templates were added.
    ///
    /// # Errors
    ///
    /// As [`Self::from_dir`]; templates loaded before the failing file stay loaded.
    pub fn load_dir(&mut self, dir: impl AsRef<Path>) -> Result<usize, EngineError> {
        let dir = dir.as_ref();
        let io = |source| EngineError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?
            .into_iter()
            .map(|entry| entry.path())
            .filter(|path| {
                path.is_file()
                    && path
                        .extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| e == "yaml" || e == "yml")
            })
            .collect();
        files.sort();
        for file in &files {
            self.load_file(file)?;
        }
        Ok(files.len())
    }

    /// Adds the template in one YAML file.
    ///
    /// # Errors
    ///
    /// [`EngineError::Io`], [`EngineError::Template`] or [`EngineError::DuplicateTemplate`].
    pub fn load_file(&mut self, path: impl AsRef<Path>) -> Result<Arc<TaskTemplate>, EngineError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let template =
            TaskTemplate::from_yaml_str(&text).map_err(|source| EngineError::Template {
                path: Some(path.to_path_buf()),
                source,
            })?;
        self.insert_from(template, Some(path))
    }

    /// Adds a template given as YAML (or JSON) text.
    ///
    /// # Errors
    ///
    /// [`EngineError::Template`] or [`EngineError::DuplicateTemplate`].
    pub fn add_yaml_str(&mut self, yaml: &str) -> Result<Arc<TaskTemplate>, EngineError> {
        let template = TaskTemplate::from_yaml_str(yaml)
            .map_err(|source| EngineError::Template { path: None, source })?;
        self.insert(template)
    }

    /// Adds a parsed template.
    ///
    /// # Errors
    ///
    /// [`EngineError::DuplicateTemplate`] when one with the same namespace, name and version is
    /// already loaded.
    pub fn insert(&mut self, template: TaskTemplate) -> Result<Arc<TaskTemplate>, EngineError> {
        self.insert_from(template, None)
    }

    fn insert_from(
        &mut self,
        template: TaskTemplate,
        path: Option<&Path>,
    ) -> Result<Arc<TaskTemplate>, EngineError> {
        let versions = self
            .templates
            .entry((template.namespace().to_owned(), template.name().to_owned()))
            .or_default();
        if versions.contains_key(template.version()) {
            return Err(EngineError::DuplicateTemplate {
                namespace: template.namespace().to_owned(),
                name: template.name().to_owned(),
                version: template.version().to_string(),
                path: path.map(Path::to_path_buf),
            });
        }
        let template = Arc::new(template);
        versions.insert(template.version().clone(), Arc::clone(&template));
        Ok(template)
    }

    /// The template `namespace`/`name` at `version`, or its latest version (highest by semantic
    /// version order) when `version` is `None`.
    pub fn get(
        &self,
        namespace: &str,
        name: &str,
        version: Option<&str>,
    ) -> Option<Arc<TaskTemplate>> {
        let versions = self
            .templates
            .get(&(namespace.to_owned(), name.to_owned()))?;
        match version {
            Some(wanted) => {
                let wanted = TemplateVersion::parse(wanted).ok()?;
                versions.get(&wanted).cloned()
            }
            None => versions.values().next_back().cloned(),
        }
    }

    /// Every template, ordered by namespace, name and version.
    pub fn templates(&self) -> Vec<Arc<TaskTemplate>> {
        self.templates
            .values()
            .flat_map(|versions| versions.values().cloned())
            .collect()
    }

    /// Number of templates (every version counted).
    pub fn len(&self) -> usize {
        self.templates.values().map(BTreeMap::len).sum()
    }

    /// Whether no template is loaded.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(version: &str) -> String {
        format!(
            "name: t\nnamespace: ns\nversion: {version}\nsteps:\n  - name: a\n    handler_class: x\n"
        )
    }

    #[test]
    fn lookup_by_version_or_latest() {
        let mut registry = TemplateRegistry::new();
        registry.add_yaml_str(&yaml("1.2.0")).expect("valid");
        registry.add_yaml_str(&yaml("1.10.0")).expect("valid");
        registry.add_yaml_str(&yaml("1.9.3")).expect("valid");
        assert_eq!(registry.len(), 3);
        let latest = registry.get("ns", "t", None).expect("found");
        assert_eq!(latest.version().to_string(), "1.10.0");
        let exact = registry.get("ns", "t", Some("1.2.0")).expect("found");
        assert_eq!(exact.version().to_string(), "1.2.0");
        assert!(registry.get("ns", "t", Some("2.0.0")).is_none());
        assert!(registry.get("ns", "other", None).is_none());
        assert!(registry.get("ns", "t", Some("not a version")).is_none());
    }

    #[test]
    fn duplicates_are_refused() {
        let mut registry = TemplateRegistry::new();
        registry.add_yaml_str(&yaml("1.0.0")).expect("valid");
        let error = registry
            .add_yaml_str(&yaml("1.0.0"))
            .expect_err("duplicate");
        assert!(error.to_string().contains("defined twice"), "{error}");
    }

    #[test]
    fn the_example_directory_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates");
        let registry = TemplateRegistry::from_dir(&dir).expect("examples load");
        assert!(registry.get("examples", "diamond", None).is_some());
        assert!(
            registry
                .get("order_fulfillment", "order_fulfillment", Some("1.0.0"))
                .is_some()
        );
    }

    #[test]
    fn a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("bad.yaml"), "name: [").expect("write");
        let error = TemplateRegistry::from_dir(dir.path()).expect_err("invalid");
        assert!(error.to_string().contains("bad.yaml"), "{error}");
    }
}
