// Files imported `with { type: "text" }` (embedded in the compiled binary).
declare module "*.sql" {
  const text: string;
  export default text;
}
declare module "*.css" {
  const text: string;
  export default text;
}
declare module "swagger-ui-dist/swagger-ui-bundle.js" {
  const text: string;
  export default text;
}
declare module "*.py" {
  const text: string;
  export default text;
}
